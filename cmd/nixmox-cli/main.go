// Command nixmox-cli validates, plans and applies nixmox manifests.
package main

import (
	"os"

	"github.com/nixmox/nixmox/pkg/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.System()))
}
