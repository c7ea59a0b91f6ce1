// Command nixmox-agent runs on each container and switches it to the
// generations nixmox-server asks for.
package main

import (
	"os"

	"github.com/nixmox/nixmox/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stderr))
}
