package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func newWatchCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Follow every rollout as it happens",
		Long: `Print every rollout's events as nixmox-server emits them — whoever started the
rollout, and including one a restarted server resumes — until interrupted.`,
		Example: `  $ nixmox-cli watch`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := f.Client()
			if err != nil {
				return err
			}
			stream, err := client.Watch(cmd.Context(), &nixmoxv1.WatchRequest{})
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					if errors.Is(cmd.Context().Err(), context.Canceled) || status.Code(err) == codes.Canceled {
						return nil // interrupted
					}
					return err
				}
				printEvent(f.IO.Out, resp.GetEvent())
			}
		},
	}
}
