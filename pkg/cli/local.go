package cli

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/internal/localnet"
)

func newLocalCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Manage the local provider's containers on this machine",
		Args:  noArgs,
	}
	var stateDir string
	down := &cobra.Command{
		Use:   "down",
		Short: "Remove everything the local provider created",
		Long: `Remove everything the local provider of the nixmox-server with this state
directory created: every process in its network namespaces (agents and the
daemons their generations started), the namespaces, the bridge, and the
provider's files. It reads the provider's inventory, so it works whether the
server runs or not; the server itself is not stopped. Needs root.`,
		Example: `  $ sudo nixmox-cli local down --state-dir /var/lib/nixmox`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The provider's own teardown, from its inventory: no server needed.
			return localnet.State{Dir: filepath.Join(stateDir, "local")}.Down(cmd.Context(), f.IO.Out)
		},
	}
	down.Flags().StringVar(&stateDir, "state-dir", "/var/lib/nixmox", "nixmox-server's state directory")
	cmd.AddCommand(down)
	return cmd
}
