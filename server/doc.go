// Package server is nixmox-server. Each job has its own room:
//
//   - Controller (controller.go, rollback.go) runs rollouts: one at a
//     time, apply, dry run, resume after a restart, rollback; it plans,
//     renders the manifest's files, has the executor (server/rollout) run
//     the steps, records and broadcasts. It knows nothing of Terraform,
//     Nix or agents.
//   - server/steps holds a runner per kind of step (containers, Terraform
//     roots, Nix build and delivery, verify, exec services), each with its
//     fingerprint.
//   - server/agents is the agents hub: streams, the agents' state, their
//     stage reports, the generation each verify waits for.
//   - AgentAPI (agentapi.go) and ControlAPI (controlapi.go) translate gRPC
//     into the hub and the controller.
//   - Serve (serve.go) wires them, after Check (check.go) found the machine
//     able to serve; cache.go serves the signed binary cache; metrics.go
//     and statuspage.go the read-only views.
//
// Below it: server/store (bbolt), server/provider with server/local and
// server/proxmox, server/terraform (terraform-exec), server/seal. See
// docs/architecture.md for one rollout's flow.
package server
