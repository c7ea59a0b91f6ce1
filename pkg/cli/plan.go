package cli

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/plan"
)

// PlanOptions are plan's options.
type PlanOptions struct {
	Factory  *Factory
	Services []string
	Format   string
}

func newPlanCmd(f *Factory) *cobra.Command {
	opts := &PlanOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show the rollout's steps in dependency order",
		Long: `Validate the manifest and print the steps of its rollout, grouped by the seed's
phases: tf:infra; nix:core and verify for each core service; tf:auth-core; then
for each application tf:service-infra, nix:service-config, tf:service-config
and verify. Each step lists the steps it needs; steps that do not need each
other run in parallel.

--service S (repeatable) keeps S and everything it needs.

Formats: text (for a terminal), json (the contract other tools read:
{"services": [...], "steps": [{"id", "phase", "service", "needs"}]}, every step
after all it needs), dot (Graphviz) and mermaid.`,
		Example: `  $ nixmox-cli plan
  $ nixmox-cli plan -f examples/homelab.nix --service vaultwarden
  $ nixmox-cli plan --format dot | dot -Tsvg > plan.svg
  $ nixmox-cli plan --format json | jq '.steps[].id'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(plan.Formats, opts.Format) {
				return usageErrorf("invalid --format %q: use %s", opts.Format, strings.Join(plan.Formats, ", "))
			}
			return planRun(cmd, opts)
		},
	}
	cmd.Flags().StringArrayVarP(&opts.Services, "service", "s", nil, "keep only this service and what it needs (repeatable)")
	cmd.Flags().StringVar(&opts.Format, "format", "text", "output format: "+strings.Join(plan.Formats, ", "))
	return cmd
}

func planRun(cmd *cobra.Command, opts *PlanOptions) error {
	g, err := opts.Factory.Graph(cmd.Context())
	if err != nil {
		return err
	}
	start := time.Now()
	p, err := plan.New(g, plan.Options{Services: opts.Services})
	var se *plan.SelectionError
	if errors.As(err, &se) {
		return &UsageError{Err: err} // a --service value the manifest lacks
	}
	if err != nil {
		return err
	}
	opts.Factory.Logger.Debug("planned", "steps", len(p.Steps), "duration", time.Since(start))
	return p.WriteFormat(opts.Factory.IO.Out, opts.Format)
}
