package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"

	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
)

// Factory gives commands what they need, lazily: nothing is loaded or
// dialled until a command asks for it, and then only once.
type Factory struct {
	IO *IOStreams
	// ManifestPath is the -f flag; "" looks for the default files.
	ManifestPath string
	// Dir is where default manifests are looked for; "" is the working
	// directory.
	Dir string
	// Loader reads manifests; tests may swap its Nix runner.
	Loader manifest.Loader
	// Logger logs to IO.ErrOut at the --log-level.
	Logger hclog.Logger
	// Socket is the server's control socket (--socket, env NIXMOX_SOCKET).
	Socket string
	// Server, if set, is a remote server's control address (--server, env
	// NIXMOX_SERVER), reached over mutual TLS with the certificates in
	// TLSDir (--tls-dir, env NIXMOX_TLS_DIR).
	Server string
	TLSDir string

	once  sync.Once
	graph *graph.Graph
	err   error

	clientOnce sync.Once
	client     nixmoxv1.ControlServiceClient
	clientErr  error
}

// Client returns the server's control API, dialled lazily over the unix
// socket (or mutual TLS to --server): commands that work offline never
// touch it.
func (f *Factory) Client() (nixmoxv1.ControlServiceClient, error) {
	f.clientOnce.Do(func() {
		if f.Server != "" {
			creds, err := f.remoteCreds()
			if err != nil {
				f.clientErr = err
				return
			}
			conn, err := grpc.NewClient(f.Server, grpc.WithTransportCredentials(creds))
			if err != nil {
				f.clientErr = err
				return
			}
			f.client = nixmoxv1.NewControlServiceClient(conn)
			return
		}
		if _, err := os.Stat(f.Socket); err != nil {
			f.clientErr = fmt.Errorf("cannot reach nixmox-server at %s: %w (is it running? set --socket or NIXMOX_SOCKET)", f.Socket, err)
			return
		}
		conn, err := grpc.NewClient(socketTarget(f.Socket), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			f.clientErr = err
			return
		}
		f.client = nixmoxv1.NewControlServiceClient(conn)
	})
	return f.client, f.clientErr
}

// NewFactory returns a factory writing to ios.
func NewFactory(ios *IOStreams) *Factory {
	return &Factory{IO: ios, Logger: hclog.NewNullLogger()}
}

// Graph loads the manifest, validates it and builds its dependency graph.
// Every problem the manifest and the graph find is in one
// *manifest.ValidationError. The result is cached.
func (f *Factory) Graph(ctx context.Context) (*graph.Graph, error) {
	f.once.Do(func() { f.graph, f.err = f.load(ctx) })
	return f.graph, f.err
}

func (f *Factory) load(ctx context.Context) (*graph.Graph, error) {
	path := f.ManifestPath
	if path == "" {
		dir := f.Dir
		if dir == "" {
			dir = "."
		}
		var err error
		if path, err = manifest.Find(dir); err != nil {
			return nil, err
		}
		path = strings.TrimPrefix(path, "./")
	}
	loader := f.Loader
	if loader.Log == nil {
		loader.Log = f.Logger
	}
	m, err := loader.Load(ctx, path)
	if m == nil {
		return nil, err
	}
	start := time.Now()
	g, gerr := graph.New(m)
	f.Logger.Debug("dependency graph built", "services", len(m.Enabled()), "duration", time.Since(start))
	if err := manifest.Join(path, err, gerr); err != nil {
		return nil, err
	}
	return g, nil
}

// newLogger returns the CLI's logger: go-hclog on stderr at level.
func newLogger(ios *IOStreams, level string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "nixmox",
		Level:  hclog.LevelFromString(level),
		Output: ios.ErrOut,
	})
}

// nixRunner honours NIXMOX_NIX_TIMEOUT (a Go duration) for evaluations.
func nixRunner() nix.Runner {
	var r nix.Runner
	if d, err := time.ParseDuration(os.Getenv("NIXMOX_NIX_TIMEOUT")); err == nil && d > 0 {
		r.EvalTimeout = d
	}
	return r
}

// socketTarget is the gRPC target of a unix socket path, relative or
// absolute ("unix://control.sock" would read control.sock as a host).
func socketTarget(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return "unix://" + path
}

// remoteCreds are the mutual TLS credentials in TLSDir: cli.pem,
// cli-key.pem and the server's CA, ca.pem (`nixmox-server cli-cert`).
func (f *Factory) remoteCreds() (credentials.TransportCredentials, error) {
	dir := f.TLSDir
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cli.pem"), filepath.Join(dir, "cli-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("the client certificate for %s: %w (make one with 'nixmox-server cli-cert' and set --tls-dir)", f.Server, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("the server's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", filepath.Join(dir, "ca.pem"))
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}), nil
}
