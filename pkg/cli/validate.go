package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// ValidateOptions are validate's options.
type ValidateOptions struct {
	Factory *Factory
	Format  string
}

func newValidateCmd(f *Factory) *cobra.Command {
	opts := &ValidateOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a manifest and report every problem in it",
		Long: `Load the manifest, decode it strictly and check it completely: unknown fields,
wrong types, names, addresses, duplicates, references between services,
dependency cycles and deployment_phases. Every problem is reported in one run,
each with its field path. Nothing is contacted: validate works offline.

With --format json the result is {"valid": bool, "file": path, "problems":
[{"path", "service", "message"}]}, for editors and CI; the exit code is the same.`,
		Example: `  $ nixmox-cli validate
  $ nixmox-cli validate -f examples/homelab.nix
  $ nixmox-cli validate -f nixmox.yaml --format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Format != "text" && opts.Format != "json" {
				return usageErrorf("invalid --format %q: use text or json", opts.Format)
			}
			return validateRun(cmd, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Format, "format", "text", "output format: text or json")
	return cmd
}

func validateRun(cmd *cobra.Command, opts *ValidateOptions) error {
	g, err := opts.Factory.Graph(cmd.Context())
	out := opts.Factory.IO.Out
	if opts.Format == "json" {
		var verr *manifest.ValidationError
		if err != nil && !errors.As(err, &verr) {
			return err // not a manifest we could read at all
		}
		res := struct {
			Valid    bool                 `json:"valid"`
			File     string               `json:"file"`
			Problems manifest.Diagnostics `json:"problems"`
		}{Valid: err == nil, Problems: manifest.Diagnostics{}}
		if verr != nil {
			res.File, res.Problems = verr.File, verr.Sorted()
		} else {
			res.File = g.Manifest().File
		}
		if encErr := writeJSON(out, res); encErr != nil {
			return encErr
		}
		if err != nil {
			return silentError{err}
		}
		return nil
	}
	if err != nil {
		return err
	}
	m := g.Manifest()
	core, edges := 0, 0
	for _, s := range m.Enabled() {
		if s.Core {
			core++
		}
		edges += len(s.Dependencies())
	}
	fmt.Fprintf(out, "%s is valid: %s (%d core), %s, %s\n", m.File,
		plural(len(m.Enabled()), "service"), core, plural(edges, "dependency"), plural(len(g.Layers()), "layer"))
	return nil
}

// plural is "1 service", "2 services"; "dependency" becomes "dependencies".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}
