package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func newLogsCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "logs ROLLOUT [STEP]",
		Short: "Show how a rollout's steps ended",
		Long: `Show the stored record of a rollout's steps (see 'nixmox-cli history' for ids), in
the order they started, each with its outcome and, for a failed or held step, the
cause; or only STEP's.`,
		Example: `  $ nixmox-cli logs 20261128T192859.842978244Z
  $ nixmox-cli logs 20261128T192859.842978244Z verify:vaultwarden`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("logs takes a rollout id and, optionally, a step")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := f.Client()
			if err != nil {
				return err
			}
			req := &nixmoxv1.LogsRequest{RolloutId: args[0]}
			if len(args) == 2 {
				req.Step = args[1]
			}
			stream, err := client.Logs(cmd.Context(), req)
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("logs: %w", err)
				}
				printEvent(f.IO.Out, resp.GetEvent())
			}
		},
	}
}
