package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func newOutputsCmd(f *Factory) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "outputs [SERVICE]",
		Short: "Show the Terraform outputs nixmox-server stored",
		Long: `Show the outputs each Terraform root had at its last apply, as stored by
nixmox-server (it never runs 'terraform output' again). Sensitive outputs show
as (sensitive): their values reach only their service's agent. With SERVICE,
only that service's roots.

With --output json: {"outputs": [{"root", "name", "sensitive", "value"}]}.`,
		Example: `  $ nixmox-cli outputs
  $ nixmox-cli outputs web --output json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("outputs takes at most one service")
			}
			if output != "text" && output != "json" {
				return usageErrorf("invalid --output %q: use text or json", output)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := f.Client()
			if err != nil {
				return err
			}
			req := &nixmoxv1.OutputsRequest{}
			if len(args) == 1 {
				req.Service = args[0]
			}
			resp, err := client.Outputs(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("outputs: %w", err)
			}
			type row struct {
				Root      string          `json:"root"`
				Name      string          `json:"name"`
				Sensitive bool            `json:"sensitive"`
				Value     json.RawMessage `json:"value,omitempty"`
			}
			rows := []row{}
			for _, o := range resp.GetOutputs() {
				r := row{Root: o.GetRoot(), Name: o.GetName(), Sensitive: o.GetSensitive()}
				if !r.Sensitive {
					r.Value = json.RawMessage(o.GetValueJson())
				}
				rows = append(rows, r)
			}
			if output == "json" {
				return writeJSON(f.IO.Out, map[string]any{"outputs": rows})
			}
			tw := newTable(f.IO.Out)
			fmt.Fprintln(tw, "ROOT\tNAME\tVALUE")
			for _, r := range rows {
				v := string(r.Value)
				if r.Sensitive {
					v = "(sensitive)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Root, r.Name, v)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&output, "output", "text", "text or json")
	return cmd
}
