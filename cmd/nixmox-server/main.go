// Command nixmox-server keeps the homelab's state and drives its rollouts.
package main

import (
	"os"

	"github.com/nixmox/nixmox/server"
)

func main() {
	os.Exit(server.Main(os.Args[1:], os.Stdout, os.Stderr))
}
