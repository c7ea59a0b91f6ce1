// Package cli is nixmox-cli: its commands, their options and the one place
// where errors become messages and exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// Main runs nixmox-cli with args (without the program name) and returns the
// exit code. It is the only place that turns errors into messages.
func Main(args []string, ios *IOStreams) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	f := NewFactory(ios)
	f.Loader.Nix = nixRunner()
	root := NewRootCmd(f)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var silent silentError
	if !errors.As(err, &silent) {
		fmt.Fprintf(ios.ErrOut, "nixmox: %s\n", err)
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		cmd, _, ferr := root.Find(args)
		if ferr != nil || cmd == nil {
			cmd = root
		}
		fmt.Fprintf(ios.ErrOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitCode(err)
}

// NewRootCmd returns the nixmox-cli command tree.
func NewRootCmd(f *Factory) *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:   "nixmox-cli",
		Short: "Deploy a homelab of NixOS containers from one service manifest",
		Long: `nixmox-cli reads one service manifest and validates it, plans its rollout in
dependency order and, with nixmox-server, deploys it.

The manifest is a Nix expression (evaluated with nix-instantiate), JSON or YAML.
Without -f, the first of ./nixmox.nix, ./nixos/service-manifest.nix, ./nixmox.json
and ./nixmox.yaml is used.

Exit codes: 0 success, 1 invalid manifest or failure, 2 usage error.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// An unknown subcommand is a usage error, not a silent help page.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				names := []string{}
				for _, c := range cmd.Commands() {
					names = append(names, c.Name())
				}
				hint := ""
				if s := manifest.Closest(args[0], names); s != "" {
					hint = fmt.Sprintf("; did you mean %q?", s)
				}
				return usageErrorf("unknown command %q%s", args[0], hint)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if hclog.LevelFromString(logLevel) == hclog.NoLevel {
				return usageErrorf("invalid --log-level %q: use trace, debug, info, warn or error", logLevel)
			}
			f.Logger = newLogger(f.IO, logLevel)
			return nil
		},
	}
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.SetIn(f.IO.In)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &UsageError{Err: err}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVarP(&f.ManifestPath, "manifest", "f", "", "manifest file (.nix, .json, .yaml)")
	root.PersistentFlags().StringVar(&f.Socket, "socket", envOr("NIXMOX_SOCKET", "/run/nixmox/control.sock"), "nixmox-server's control socket (env NIXMOX_SOCKET)")
	root.PersistentFlags().StringVar(&f.Server, "server", os.Getenv("NIXMOX_SERVER"), "a remote nixmox-server's control address (its --control-listen), reached over mutual TLS (env NIXMOX_SERVER)")
	root.PersistentFlags().StringVar(&f.TLSDir, "tls-dir", envOr("NIXMOX_TLS_DIR", defaultTLSDir()), "cli.pem, cli-key.pem and ca.pem for --server, from 'nixmox-server cli-cert' (env NIXMOX_TLS_DIR)")
	root.PersistentFlags().StringVar(&logLevel, "log-level", envOr("NIXMOX_LOG_LEVEL", "warn"), "log level: trace, debug, info, warn, error (env NIXMOX_LOG_LEVEL)")

	root.AddCommand(
		newValidateCmd(f),
		newPlanCmd(f),
		newGenerateCmd(f),
		newSchemaCmd(f),
		newApplyCmd(f),
		newStatusCmd(f),
		newHistoryCmd(f),
		newWatchCmd(f),
		newRollbackCmd(f),
		newLogsCmd(f),
		newUnlockCmd(f),
		newLocalCmd(f),
		newOutputsCmd(f),
	)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " "))
	}
	return nil
}

// defaultTLSDir is ~/.config/nixmox (or $XDG_CONFIG_HOME/nixmox).
func defaultTLSDir() string {
	if dir, err := os.UserConfigDir(); err == nil {
		return filepath.Join(dir, "nixmox")
	}
	return ".nixmox"
}
