package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func newRollbackCmd(f *Factory) *cobra.Command {
	var to int64
	cmd := &cobra.Command{
		Use:   "rollback SERVICE",
		Short: "Set a service back to an earlier generation",
		Long: `Deploy an earlier generation's closure of SERVICE again — by default the last
healthy generation before its newest healthy one, or --to N — as a new
generation, verified like any deploy. It does not run beside a rollout.`,
		Example: `  $ nixmox-cli rollback vaultwarden
  $ nixmox-cli rollback vaultwarden --to 3`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("rollback takes one service")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if to < 0 {
				return usageErrorf("--to must be a generation number")
			}
			client, err := f.Client()
			if err != nil {
				return err
			}
			stream, err := client.Rollback(cmd.Context(), &nixmoxv1.RollbackRequest{Service: args[0], ToGeneration: to})
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("rollback: %w", err)
				}
				printEvent(f.IO.Out, resp.GetEvent())
			}
		},
	}
	cmd.Flags().Int64Var(&to, "to", 0, "the generation to go back to (default: the previous healthy one)")
	return cmd
}
