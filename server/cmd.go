package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nixmox/nixmox/internal/atomicfile"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// Defaults of nixmox-server's flags.
const (
	DefaultStateDir = "/var/lib/nixmox"
	DefaultSocket   = "/run/nixmox/control.sock"
	DefaultListen   = ":7443"
)

// Main runs nixmox-server with args (without the program name) and
// returns the exit code: 0 ok, 1 failure, 2 usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usage := false
	root := NewRootCmd(ctx, stdout, stderr, &usage)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "nixmox-server: %s\n", err)
		if usage || strings.HasPrefix(err.Error(), "unknown command") {
			return 2
		}
		return 1
	}
	return 0
}

// NewRootCmd returns nixmox-server's command tree; usage is set when a
// command line error is found.
func NewRootCmd(ctx context.Context, stdout, stderr io.Writer, usage *bool) *cobra.Command {
	root := &cobra.Command{
		Use:           "nixmox-server",
		Short:         "Keep the homelab's state and drive its rollouts",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { *usage = true; return err })
	root.CompletionOptions.DisableDefaultCmd = true

	var cfg Config
	var logLevel string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the server",
		Long: `Run the server: agents connect to --listen over mutual TLS (the server's own
CA signs every certificate); nixmox-cli and 'nixmox-server token' talk to the
control socket, which only its owner can open.`,
		Example: `  $ nixmox-server serve --state-dir /var/lib/nixmox --listen 10.40.0.2:7443 --host 10.40.0.2`,
		Args:    usageArgs(usage, cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "nixmox-server", Level: hclog.LevelFromString(logLevel), Output: stderr})
			return Serve(ctx, cfg)
		},
	}
	addServeFlags(serve, &cfg)
	serve.Flags().StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")

	check := &cobra.Command{
		Use:   "check",
		Short: "Check that this machine can serve: Nix builds, Terraform runs, the provider works",
		Long: `Run the checks serve runs before it serves, print what each found and exit:
0 when the server can serve, 1 when something is missing. Nix must evaluate and
build (a one-line derivation, without substituters); terraform (--terraform) must
run; the local provider needs root, iproute2's ip and nixmox-agent; the proxmox
provider needs its token, an API that answers and the template on the node.
Each problem is one sentence that says how to fix it. Takes serve's flags.`,
		Example: `  $ nixmox-server check --provider local
  $ nixmox-server check --provider proxmox --proxmox-node pve1 --proxmox-token-id 'root@pam!nixmox' \
      --proxmox-token-file /etc/nixmox/proxmox-token --proxmox-template local:vztmpl/nixos.tar.xz`,
		Args: usageArgs(usage, cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			findings := Check(ctx, cfg)
			writeFindings(stdout, findings)
			if ps := problems(findings); ps != nil {
				return fmt.Errorf("this machine cannot serve: %s above", plural(len(ps), "problem"))
			}
			return nil
		},
	}
	addServeFlags(check, &cfg)

	var socket, out string
	var ttl time.Duration
	token := &cobra.Command{
		Use:   "token SERVICE",
		Short: "Issue a one-time enrollment token for a service's agent",
		Long: `Ask the running server for a one-time enrollment token and write the file the
agent enrolls with (token and CA), owner-only. Deliver it to that container only.`,
		Example: `  $ nixmox-server token vaultwarden -o /run/nixmox/enroll-vaultwarden.json`,
		Args:    usageArgs(usage, cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := grpc.NewClient(socketTarget(socket), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := nixmoxv1.NewControlServiceClient(conn).IssueToken(ctx, &nixmoxv1.IssueTokenRequest{Service: args[0], TtlSeconds: int64(ttl.Seconds())})
			if err != nil {
				return err
			}
			data, _ := json.MarshalIndent(map[string]string{"token": resp.GetToken(), "ca_pem": string(resp.GetCaPem())}, "", "  ")
			data = append(data, '\n')
			if out == "" || out == "-" {
				_, err = stdout.Write(data)
				return err
			}
			return atomicfile.Write(out, data, 0o600)
		},
	}
	token.Flags().StringVar(&socket, "socket", DefaultSocket, "control socket")
	token.Flags().StringVarP(&out, "output", "o", "", "file to write (0600); default stdout")
	token.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	var certState, certOut string
	cliCert := &cobra.Command{
		Use:   "cli-cert NAME",
		Short: "Make a client certificate for a remote nixmox-cli user",
		Long: `Make a key and a certificate for the nixmox-cli user NAME, signed by the
server's CA, for the control API served with --control-listen. They are written
to -o (cli-key.pem owner-only, cli.pem, ca.pem); point nixmox-cli at them with
--tls-dir. Such a certificate opens the control API and nothing else; audit
entries name its user. Run it on the server's host: it reads the CA from the
state directory.`,
		Example: `  $ nixmox-server cli-cert alice -o /root/alice-nixmox
  # on alice's machine, with that directory copied to ~/.config/nixmox:
  $ nixmox-cli --server nixmox.home.arpa:7445 status`,
		Args: usageArgs(usage, cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !manifest.ValidServiceName(args[0]) {
				*usage = true
				return fmt.Errorf("%q is not a user name: letters, digits, - and _", args[0])
			}
			if certOut == "" {
				*usage = true
				return fmt.Errorf("-o DIR is required")
			}
			if err := WriteCLICert(certState, args[0], certOut); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s/cli.pem, cli-key.pem and ca.pem for %s\n", certOut, args[0])
			return nil
		},
	}
	cliCert.Flags().StringVar(&certState, "state-dir", DefaultStateDir, "the server's state directory (its CA)")
	cliCert.Flags().StringVarP(&certOut, "output", "o", "", "directory to write the key and certificates to")
	root.AddCommand(serve, check, token, cliCert, newStateCmd(stdout, usage))
	return root
}

// usageArgs is check, with a wrong command line marked a usage error
// (exit 2).
func usageArgs(usage *bool, check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			*usage = true
			return err
		}
		return nil
	}
}

// addServeFlags adds the flags of what the server serves with to serve and
// check.
func addServeFlags(cmd *cobra.Command, cfg *Config) {
	f := cmd.Flags()
	f.StringVar(&cfg.StateDir, "state-dir", DefaultStateDir, "state directory (state.db, ca/)")
	f.StringVar(&cfg.AgentListen, "listen", DefaultListen, "address agents connect to")
	f.StringArrayVar(&cfg.AgentHosts, "host", nil, "name or IP agents reach the server by (repeatable)")
	f.StringVar(&cfg.ControlSocket, "socket", DefaultSocket, "control socket")
	f.StringVar(&cfg.ControlListen, "control-listen", "", "also serve the control API here over mutual TLS, to nixmox-cli certificates only (see cli-cert)")
	f.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:9464", "serve the read-only status page and /metrics here (\"\" to disable)")
	f.StringVar(&cfg.CacheListen, "cache-listen", "", "serve the signed binary cache over HTTP here (agents on other hosts); default: agents read it as a local file")
	f.StringVar(&cfg.Provider, "provider", "none", "what makes the containers: none (they exist), local (network namespaces on this machine; root) or proxmox")
	f.StringVar(&cfg.Proxmox.URL, "proxmox-url", "https://127.0.0.1:8006/api2/json", "the Proxmox API (TLS is always verified)")
	f.StringVar(&cfg.Proxmox.TokenID, "proxmox-token-id", "", "API token id, USER@REALM!NAME")
	f.StringVar(&cfg.Proxmox.TokenFile, "proxmox-token-file", "", "file holding the API token's secret (or set PROXMOX_TOKEN_SECRET)")
	f.StringVar(&cfg.Proxmox.CAFile, "proxmox-ca-file", "", "CA of the API's certificate (default: the system's)")
	f.StringVar(&cfg.Proxmox.Node, "proxmox-node", "", "the node containers are made on (a service's node overrides it); pct runs here, so it is this machine's node")
	f.StringVar(&cfg.Proxmox.Storage, "proxmox-storage", "local-lvm", "storage of the containers' root filesystems")
	f.StringVar(&cfg.Proxmox.Template, "proxmox-template", "", "the NixOS LXC template, STORAGE:vztmpl/FILE")
	f.StringVar(&cfg.Proxmox.Bridge, "proxmox-bridge", "vmbr0", "the host bridge of the containers' net0")
	f.StringVar(&cfg.Proxmox.Pct, "proxmox-pct", "pct", "Proxmox's pct, which puts the agent and its enrollment file into each new container (it reaches the containers of this machine's node)")
	f.StringVar(&cfg.Proxmox.Pool, "proxmox-pool", "nixmox", "the resource pool containers are created in (made if missing)")
	f.StringToStringVar(&cfg.Proxmox.StorageOn, "proxmox-storage-on", nil, "NODE=STORAGE: another node's storage for root filesystems (repeatable)")
	f.StringToStringVar(&cfg.Proxmox.TemplateOn, "proxmox-template-on", nil, "NODE=STORAGE:vztmpl/FILE: another node's NixOS LXC template (repeatable)")
	f.StringToStringVar(&cfg.Proxmox.PctOn, "proxmox-pct-on", nil, "NODE=PROGRAM: the pct of another node (a program run with pct's arguments on that node, e.g. a wrapper around ssh; repeatable)")
	f.StringVar(&cfg.LocalBridge, "local-bridge", "nixmox0", "the local provider's bridge")
	f.StringVar(&cfg.LocalNetnsPrefix, "local-netns-prefix", "nixmox-", "the local provider's namespace names: PREFIX+service")
	f.StringVar(&cfg.LocalDataDir, "local-data-dir", "/var/lib/nixmox-local", "the local provider's daemon data, one directory per service")
	f.StringVar(&cfg.Terraform, "terraform", "terraform", "terraform or tofu (name on PATH or path)")
	f.StringVar(&cfg.TerraformBackend, "terraform-backend", "", "state backend of every root, configured by its environment (pg: PG_CONN_STR); default: local state under --state-dir")
	f.DurationVar(&cfg.ConfirmTimeout, "confirm-timeout", 30*time.Second, "how long an agent waits for the server to confirm a healthy generation before it rolls back")
	f.Var(&substituters{&cfg.Substituters}, "substituters", "binary caches builds substitute from, space-separated (default: the host's Nix configuration, cache.nixos.org unless changed)")
	f.Var(&noSubstituters{&cfg.Substituters}, "no-substituters", "build everything locally, asking no binary cache (offline; the demo and the tests)")
	f.Lookup("no-substituters").NoOptDefVal = "true"
	f.IntVar(&cfg.KeepGenerations, "keep-generations", 5, "built systems kept from garbage collection per service (rooted under --state-dir/gcroots); older ones are released")
}

// socketTarget is the gRPC target of a unix socket path, relative or
// absolute.
func socketTarget(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return "unix://" + path
}

// substituters is --substituters: it replaces the host's substituters.
type substituters struct{ p **string }

func (s *substituters) String() string {
	if s.p == nil || *s.p == nil {
		return ""
	}
	return **s.p
}
func (s *substituters) Set(v string) error { *s.p = &v; return nil }
func (s *substituters) Type() string       { return "urls" }

// noSubstituters is --no-substituters: substituters "".
type noSubstituters struct{ p **string }

func (s *noSubstituters) String() string { return "false" }
func (s *noSubstituters) Set(v string) error {
	if v != "true" {
		return fmt.Errorf("--no-substituters takes no value")
	}
	none := ""
	*s.p = &none
	return nil
}
func (s *noSubstituters) Type() string     { return "bool" }
func (s *noSubstituters) IsBoolFlag() bool { return true }
