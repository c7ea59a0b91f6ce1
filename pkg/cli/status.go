package cli

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// StatusOptions are status's options.
type StatusOptions struct {
	Factory *Factory
	Output  string
}

func newStatusCmd(f *Factory) *cobra.Command {
	opts := &StatusOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every service's health, generations and agent",
		Long: `Ask nixmox-server (over its control socket) for every service's status: health
as its agent last reported it, active and desired generation, last result, when
it last reported and whether its agent is connected.

With --output json: {"services": [{"name", "health", "generation",
"desired_generation", "last_result", "last_report", "agent_connected"}]}.`,
		Example: `  $ nixmox-cli status
  $ nixmox-cli status --output json | jq '.services[] | select(.health != "healthy")'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Output != "text" && opts.Output != "json" {
				return usageErrorf("invalid --output %q: use text or json", opts.Output)
			}
			return statusRun(cmd, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Output, "output", "text", "output format: text or json")
	return cmd
}

// serviceStatus is the JSON form of one service's status.
type serviceStatus struct {
	Name              string `json:"name"`
	Health            string `json:"health"`
	Generation        int64  `json:"generation"`
	DesiredGeneration int64  `json:"desired_generation"`
	LastResult        string `json:"last_result"`
	LastReport        string `json:"last_report,omitempty"`
	AgentConnected    bool   `json:"agent_connected"`
	Node              string `json:"node,omitempty"`
}

func statusRun(cmd *cobra.Command, opts *StatusOptions) error {
	client, err := opts.Factory.Client()
	if err != nil {
		return err
	}
	resp, err := client.Status(cmd.Context(), &nixmoxv1.StatusRequest{})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	out := []serviceStatus{}
	for _, s := range resp.GetServices() {
		st := serviceStatus{
			Name: s.GetName(), Health: api.HealthWord(s.GetHealth()),
			Generation: s.GetGeneration(), DesiredGeneration: s.GetDesiredGeneration(),
			LastResult: api.StepWord(s.GetLastResult()), AgentConnected: s.GetAgentConnected(), Node: s.GetNode(),
		}
		if s.GetLastReport() != nil {
			st.LastReport = s.GetLastReport().AsTime().UTC().Format(time.RFC3339)
		}
		out = append(out, st)
	}
	w := opts.Factory.IO.Out
	if opts.Output == "json" {
		return writeJSON(w, map[string]any{"services": out})
	}
	tw := newTable(w)
	withNodes := slices.ContainsFunc(out, func(s serviceStatus) bool { return s.Node != "" })
	header := "SERVICE\tHEALTH\tGENERATION\tDESIRED\tLAST RESULT\tLAST REPORT\tAGENT"
	if withNodes {
		header += "\tNODE"
	}
	fmt.Fprintln(tw, header)
	for _, s := range out {
		agent := "disconnected"
		if s.AgentConnected {
			agent = "connected"
		}
		report := s.LastReport
		if report == "" {
			report = "-"
		}
		line := fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%s\t%s", s.Name, s.Health, s.Generation, s.DesiredGeneration, s.LastResult, report, agent)
		if withNodes {
			line += "\t" + s.Node
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}
