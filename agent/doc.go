// Package agent will hold nixmox-agent: enrollment, the stream client,
// closure pull, profile switch, health loop and rollback. It lands with the
// server/agent issue; see docs/architecture.md.
package agent
