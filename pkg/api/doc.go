// Package api holds the Go code generated from proto/ by buf (see
// buf.gen.yaml): nixmox/v1 is the API between nixmox-cli, nixmox-server
// and nixmox-agent. It is committed, so a plain `go build` needs no code
// generation; `make proto` regenerates it and a test fails when it is stale.
package api
