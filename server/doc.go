// Package server is nixmox-server: the gRPC services (AgentAPI so far), and
// in its subpackages the bbolt state store (store), the certificate
// authority (pki) and the rollout executor (rollout). The rollout
// controller, providers, Terraform runner, binary cache and metrics land
// with their issues; see docs/architecture.md.
package server
