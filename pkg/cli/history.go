package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func newHistoryCmd(f *Factory) *cobra.Command {
	var limit int
	var output string
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List past rollouts, newest first",
		Long: `List the rollouts nixmox-server has recorded, newest first: id, manifest, when
it started and finished, whether every step succeeded, and who started it.`,
		Example: `  $ nixmox-cli history --limit 5
  $ nixmox-cli history --output json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageErrorf("invalid --output %q: use text or json", output)
			}
			client, err := f.Client()
			if err != nil {
				return err
			}
			resp, err := client.History(cmd.Context(), &nixmoxv1.HistoryRequest{Limit: int32(limit)})
			if err != nil {
				return fmt.Errorf("history: %w", err)
			}
			type row struct {
				ID       string `json:"id"`
				Manifest string `json:"manifest"`
				Started  string `json:"started"`
				Finished string `json:"finished,omitempty"`
				OK       bool   `json:"ok"`
				Who      string `json:"who"`
			}
			rows := []row{}
			for _, r := range resp.GetRollouts() {
				x := row{ID: r.GetId(), Manifest: r.GetManifestFile(), Started: r.GetStarted().AsTime().UTC().Format(time.RFC3339), OK: r.GetOk(), Who: r.GetWho()}
				if r.GetFinished() != nil {
					x.Finished = r.GetFinished().AsTime().UTC().Format(time.RFC3339)
				}
				rows = append(rows, x)
			}
			if output == "json" {
				return writeJSON(f.IO.Out, map[string]any{"rollouts": rows})
			}
			tw := newTable(f.IO.Out)
			fmt.Fprintln(tw, "ROLLOUT\tRESULT\tSTARTED\tFINISHED\tWHO\tMANIFEST")
			for _, r := range rows {
				result := "failed"
				if r.OK {
					result = "ok"
				} else if r.Finished == "" {
					result = "running"
				}
				fin := r.Finished
				if fin == "" {
					fin = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, result, r.Started, fin, r.Who, r.Manifest)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many rollouts")
	cmd.Flags().StringVar(&output, "output", "text", "output format: text or json")
	return cmd
}

func newUnlockCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "unlock ROLLOUT",
		Short: "Clear the rollout lock left by a server that died holding it",
		Long: `Clear the lock that lets one rollout run at a time, naming the rollout that
holds it (see 'nixmox-cli history'). Only for a rollout whose server died: a
running rollout still holds its lock.`,
		Example: `  $ nixmox-cli unlock 20261128T192859.842978244Z`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("unlock takes the id of the rollout holding the lock")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := f.Client()
			if err != nil {
				return err
			}
			if _, err := client.Unlock(cmd.Context(), &nixmoxv1.UnlockRequest{RolloutId: args[0]}); err != nil {
				return fmt.Errorf("unlock: %w", err)
			}
			fmt.Fprintf(f.IO.Out, "unlocked %s\n", args[0])
			return nil
		},
	}
}
