// Package terraform holds nixmox's reusable Terraform modules (modules/),
// embedded so that `nixmox-cli generate` can copy them next to the root
// modules it writes, making each generated root self-contained.
package terraform

import "embed"

// Modules is the modules/ tree.
//
//go:embed modules
var Modules embed.FS
