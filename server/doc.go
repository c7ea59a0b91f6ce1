// Package server will hold nixmox-server: the gRPC services, the rollout
// controller, the bbolt state store, the providers (proxmox, local), the
// Terraform runner, the binary cache and the metrics. It lands with the
// server/agent issue; see docs/architecture.md.
package server
