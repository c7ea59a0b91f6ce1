package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// Main runs nixmox-agent with args and returns the exit code: 0 ok, 1
// failure, 2 usage error.
func Main(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usage := false
	cmd := NewRootCmd(ctx, stderr, &usage)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "nixmox-agent: %s\n", err)
		if usage {
			return 2
		}
		return 1
	}
	return 0
}

// NewRootCmd returns nixmox-agent's command; usage is set when a command
// line error is found.
func NewRootCmd(ctx context.Context, stderr io.Writer, usage *bool) *cobra.Command {
	var cfg Config
	var logLevel, systemdRun string
	cmd := &cobra.Command{
		Use:   "nixmox-agent",
		Short: "Switch this container to the generations nixmox-server asks for",
		Long: `Enroll with a one-time token (once), then hold a stream to the server: pull
each desired generation, switch the system profile to it, activate it, run its
health checks, report, and roll back when it is unhealthy or the server does
not confirm it within confirm_timeout.`,
		Example:       `  $ nixmox-agent --server 10.40.0.2:7443 --service dns --enroll-file /run/nixmox/enroll.json`,
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(*cobra.Command, []string) error {
			if cfg.Server == "" || cfg.Service == "" {
				*usage = true
				return fmt.Errorf("--server and --service are required")
			}
			var err error
			if cfg.SystemdRun, err = findSystemdRun(systemdRun); err != nil {
				*usage = true
				return err
			}
			// Nix's binary-cache database is the agent's own, in its state
			// directory unless the unit gives one (the NixOS module's
			// CacheDirectory): Nix 2.8's database fails concurrent pulls of
			// agents sharing a home ("constraint failed").
			if os.Getenv("XDG_CACHE_HOME") == "" {
				os.Setenv("XDG_CACHE_HOME", filepath.Join(cfg.StateDir, "cache"))
			}
			if problems := Check(cfg); problems != nil {
				return fmt.Errorf("refusing to start:\n  - %s", strings.Join(problems, "\n  - "))
			}
			cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "nixmox-agent", Level: hclog.LevelFromString(logLevel), Output: stderr}).With("service", cfg.Service)
			return Run(ctx, cfg)
		},
	}
	cmd.SetOut(stderr)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { *usage = true; return err })
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "host:port of nixmox-server's agent listener")
	f.StringVar(&cfg.Service, "service", "", "the service this container runs")
	f.StringVar(&cfg.EnrollFile, "enroll-file", "/run/nixmox/enroll.json", "token file from 'nixmox-server token' (used once)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/nixmox-agent", "key, certificate and CA")
	f.StringVar(&cfg.Profile, "profile", "/nix/var/nix/profiles/system", "the profile to switch")
	f.StringVar(&cfg.CurrentSystem, "current-system", "/run/current-system", "the running NixOS system's link (\"\" where the profile is not NixOS's)")
	f.StringVar(&systemdRun, "systemd-run", "auto", "systemd-run, to run each switch as a transient unit; auto: systemd-run from PATH when systemd runs the machine; none: run switches in a session of their own")
	f.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	return cmd
}

// findSystemdRun resolves --systemd-run: auto is systemd-run from PATH
// when systemd is the init system (/run/systemd/system exists, as
// sd_booted(3) checks), none or "" is none.
func findSystemdRun(flag string) (string, error) {
	switch flag {
	case "", "none":
		return "", nil
	case "auto":
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			return "", nil
		}
		p, err := exec.LookPath("systemd-run")
		if err != nil {
			return "", fmt.Errorf("--systemd-run auto: systemd runs this machine but systemd-run is not on PATH; give its path")
		}
		return p, nil
	}
	if st, err := os.Stat(flag); err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("--systemd-run %s: not an executable file", flag)
	}
	return flag, nil
}
