package cli

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/render"
)

// GenerateOptions are generate's options.
type GenerateOptions struct {
	Factory  *Factory
	OutDir   string
	Services []string
	Check    bool
}

func newGenerateCmd(f *Factory) *cobra.Command {
	opts := &GenerateOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Write every file the manifest implies",
		Long: `Validate the manifest and write, under the output directory:

  containers/<s>.json        the LXC container of each service, in the Proxmox API's fields
  terraform/auth-core/       Authentik apps, OIDC and proxy providers, outposts (+ modules/)
  terraform/infra/           the core services' own Terraform modules
  terraform/services/<s>/    a root module per service with interface.terraform
  caddy/Caddyfile            a site per proxy domain, forward_auth where asked
  dns/unbound.conf           A records per host, CNAMEs per proxy domain
  postgresql/init.sql        idempotent SQL creating every role and database
  hosts/<s>.json             per-host facts for the NixOS configuration
  health/<s>.sh              each service's health checks

The directory is replaced atomically: the new tree is written beside it and
swapped in, so it is never half-written. Output is deterministic: the same
manifest gives byte-identical files. No API URL, token or secret is written.

--check writes nothing: it exits 1 listing the files that differ from what
is on disk (for CI in your repository).`,
		Example: `  $ nixmox-cli generate -f nixmox.nix -o generated
  $ nixmox-cli generate --service vaultwarden -o /tmp/vw
  $ nixmox-cli generate --check -o generated`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(opts.OutDir) == "" {
				return usageErrorf("-o/--output must name a directory")
			}
			return generateRun(cmd, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.OutDir, "output", "o", "generated", "directory to write")
	cmd.Flags().StringArrayVarP(&opts.Services, "service", "s", nil, "only this service and what it needs (repeatable)")
	cmd.Flags().BoolVar(&opts.Check, "check", false, "write nothing; exit 1 if the files on disk differ")
	return cmd
}

func generateRun(cmd *cobra.Command, opts *GenerateOptions) error {
	g, err := opts.Factory.Graph(cmd.Context())
	if err != nil {
		return err
	}
	for _, s := range opts.Services {
		if !g.Has(s) {
			return usageErrorf("unknown or disabled service %q", s)
		}
	}
	tree, err := render.Render(g, render.Options{
		Services:    opts.Services,
		ManifestDir: filepath.Dir(g.Manifest().File),
		OutDir:      opts.OutDir,
	})
	if err != nil {
		return err
	}
	out := opts.Factory.IO.Out
	if opts.Check {
		diff, err := render.Diff(opts.OutDir, tree)
		if err != nil {
			return err
		}
		if len(diff) == 0 {
			fmt.Fprintf(out, "%s is up to date (%d files)\n", opts.OutDir, len(tree))
			return nil
		}
		for _, d := range diff {
			fmt.Fprintln(out, d)
		}
		return fmt.Errorf("%s is out of date: %d of its files differ from the manifest; run nixmox-cli generate", opts.OutDir, len(diff))
	}
	if err := render.Write(opts.OutDir, tree); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %d files to %s\n", len(tree), opts.OutDir)
	return nil
}
