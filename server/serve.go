package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/local"
	"github.com/nixmox/nixmox/server/proxmox"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/steps"
	"github.com/nixmox/nixmox/server/terraform"
)

// Config is how nixmox-server runs.
type Config struct {
	// StateDir holds state.db and the CA (ca/); created 0700.
	StateDir string
	// AgentListen is the TCP address agents connect to (mTLS).
	AgentListen string
	// AgentHosts are the names and IPs agents reach the server by; they go
	// into the server's certificate. 127.0.0.1 and localhost are always in.
	AgentHosts []string
	// ControlSocket is the unix socket the CLI talks to; 0600.
	ControlSocket string
	// ControlListen, if set, also serves the control API there over mutual
	// TLS, to nixmox-cli certificates only (`nixmox-server cli-cert`).
	ControlListen string
	// CacheListen, if set, serves the signed binary cache over HTTP there
	// (for agents on other hosts); its URL uses the first AgentHosts entry.
	// Otherwise agents pull from file:// (the same host).
	CacheListen string
	// Provider makes containers: "" or "none" (they exist already) or
	// "local" (network namespaces on this machine; needs root).
	Provider string
	// Proxmox configures the proxmox provider.
	Proxmox proxmox.Config
	// LocalBridge is the local provider's bridge ("" = nixmox0).
	LocalBridge string
	// LocalNetnsPrefix starts the local containers' namespace names
	// ("" = "nixmox-").
	LocalNetnsPrefix string
	// LocalDataDir holds the local containers' daemon data
	// ("" = /var/lib/nixmox-local).
	LocalDataDir string
	// Terraform is the terraform or tofu binary ("" = terraform).
	Terraform string
	// TerraformBackend is the state backend of every root ("" = local state
	// in the server's work directory), configured by its environment
	// variables (for pg: PG_CONN_STR).
	TerraformBackend string
	// HTTPListen, if set, serves the status page and /metrics there (read
	// only; loopback by default).
	HTTPListen string
	// Substituters replaces the host's substituters for builds (a
	// space-separated list; nil keeps the host's Nix configuration, ""
	// uses none).
	Substituters *string
	// KeepGenerations is how many built systems per service stay rooted.
	KeepGenerations int
	// ConfirmTimeout is how long an agent waits for confirmation of a
	// healthy generation (0 = 30 s).
	ConfirmTimeout time.Duration
	Log            hclog.Logger
	// Ready, if set, is called with the agent listener's address once both
	// listeners accept connections.
	Ready func(agentAddr string)
}

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	// What the server needs is checked before anything is opened, so a
	// machine that cannot build or run Terraform is told so now, once,
	// instead of in every step of the first rollout.
	findings := Check(ctx, cfg)
	if ps := problems(findings); ps != nil {
		return &CheckError{Problems: ps}
	}
	for _, f := range findings {
		log.Info("check", "what", f.Name, "ok", f.OK)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.Close()
	unclaim, err := claimState(cfg.StateDir)
	if err != nil {
		return err
	}
	defer unclaim()
	// A consistent copy at every start and after every rollout: what
	// `nixmox-server state restore` puts back.
	backup := func() {
		if path, err := backupState(st, cfg.StateDir, time.Now()); err != nil {
			log.Error("backing the state up", "error", err)
		} else {
			log.Debug("state backed up", "path", path)
		}
	}
	backup()
	ca, err := pki.LoadOrCreate(filepath.Join(cfg.StateDir, "ca"))
	if err != nil {
		return err
	}
	certs, err := newServerCerts(ca, append([]string{"127.0.0.1", "localhost"}, cfg.AgentHosts...))
	if err != nil {
		return err
	}
	hub := &agents.Hub{}
	agentAPI := &AgentAPI{Store: st, CA: ca, Log: log.Named("agents"), Hub: hub}
	agentSrv := grpc.NewServer(append(recovering(log), grpc.MaxRecvMsgSize(api.MaxAgentMessageBytes),
		grpc.Creds(credentials.NewTLS(agentTLS(certs.get, ca))))...)
	nixmoxv1.RegisterAgentServiceServer(agentSrv, agentAPI)
	controlMax := grpc.MaxRecvMsgSize(api.MaxManifestBytes + 1<<20) // the manifest and the request around it
	controlSrv := grpc.NewServer(append(recovering(log), controlMax)...)
	cacheKey, err := nix.LoadOrCreateCacheKey(ctx, filepath.Join(cfg.StateDir, "cache-key"), "nixmox")
	if err != nil {
		return fmt.Errorf("the binary cache's signing key: %w", err)
	}
	secrets, err := seal.LoadOrCreate(filepath.Join(cfg.StateDir, "secrets.key"))
	if err != nil {
		return fmt.Errorf("the secrets key: %w", err)
	}
	work := filepath.Join(cfg.StateDir, "work")
	tf := &steps.Terraform{Store: st, Secrets: secrets, WorkDir: work,
		Applier: &terraform.Runner{Binary: cfg.Terraform, Backend: cfg.TerraformBackend, PluginCacheDir: filepath.Join(work, "plugins")}}
	build := &steps.Build{Store: st, Secrets: secrets, CacheDir: filepath.Join(cfg.StateDir, "cache"), CacheKey: cacheKey,
		GCRoots: filepath.Join(cfg.StateDir, "gcroots"), Keep: cfg.KeepGenerations}
	if cfg.Substituters != nil {
		build.NixOptions = []string{"--option", "substituters", *cfg.Substituters}
	}
	deliver := &steps.Deliver{Store: st, Agents: hub, ConfirmTimeout: cfg.ConfirmTimeout,
		CacheDir: build.CacheDir, CachePublicKey: cacheKey.Public}
	runners := &steps.Set{
		Containers: &steps.Containers{Terraform: tf, Enroll: func(_ context.Context, service string) ([]byte, error) {
			return enrollFile(st, ca, service)
		}},
		Terraform: tf,
		Deploy:    &steps.Deploy{Build: build, Deliver: deliver},
		Verify:    &steps.Verify{Store: st, Agents: hub, Build: build, Deliver: deliver, Log: log.Named("rollout")},
		Exec:      &steps.Exec{},
	}
	controller := &Controller{Store: st, Log: log.Named("rollout"), Steps: runners, WorkDir: work, Recorded: backup}
	control := &ControlAPI{Store: st, Agents: hub, CA: ca, Controller: controller}
	nixmoxv1.RegisterControlServiceServer(controlSrv, control)
	metrics := NewMetrics(func(ctx context.Context) ([]*nixmoxv1.ServiceStatus, error) {
		resp, err := control.Status(ctx, &nixmoxv1.StatusRequest{})
		return resp.GetServices(), err
	}, func() bool {
		holder, _ := st.LockHolder()
		return holder != ""
	})
	agentAPI.Metrics, controller.Metrics = metrics, metrics

	agentLis, err := listenTCP(cfg.AgentListen)
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(agentLis.Addr().String())
	p, _ := strconv.Atoi(port)
	prov, err := newProvider(cfg, p)
	if err != nil {
		agentLis.Close()
		return err
	}
	runners.Containers.Provider = prov
	if lp, ok := prov.(*local.Provider); ok {
		// Its agents are supervised as systemd would on a container.
		go lp.Supervise(ctx, time.Second, runners.Containers.Enroll, log.Named("local").StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Info}))
	}
	// A socket another live server answers on is its, not a stale file.
	if conn, err := net.DialTimeout("unix", cfg.ControlSocket, time.Second); err == nil {
		conn.Close()
		agentLis.Close()
		return fmt.Errorf("another nixmox-server is serving on the control socket %s: stop it, or give this one another --socket", cfg.ControlSocket)
	}
	if err := os.Remove(cfg.ControlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		agentLis.Close()
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.ControlSocket), 0o755); err != nil {
		agentLis.Close()
		return err
	}
	// The socket is created owner-only: its permissions are the control
	// API's access control.
	old := umask(0o177)
	controlLis, err := net.Listen("unix", cfg.ControlSocket)
	umask(old)
	if err != nil {
		agentLis.Close()
		return err
	}
	errs := make(chan error, 3)
	if cfg.CacheListen != "" {
		cacheLis, err := listenTCP(cfg.CacheListen)
		if err != nil {
			agentLis.Close()
			controlLis.Close()
			return err
		}
		_, port, _ := net.SplitHostPort(cacheLis.Addr().String())
		switch lhost, _, _ := net.SplitHostPort(cfg.CacheListen); {
		case len(cfg.AgentHosts) > 0:
			deliver.CacheURL = "http://" + net.JoinHostPort(cfg.AgentHosts[0], port)
		case lhost == "" || net.ParseIP(lhost).IsUnspecified():
			// Every address: each agent pulls from the one it reached.
			deliver.CachePort = port
		default:
			deliver.CacheURL = "http://" + net.JoinHostPort(lhost, port)
		}
		// Read-only, and everything in it is signed: agents trust only the
		// server's key, so the transport needs no more.
		cacheSrv := &http.Server{Handler: cacheHandler(build.CacheDir), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- cacheSrv.Serve(cacheLis) }()
		defer cacheSrv.Close()
		log.Info("binary cache", "url", "http://"+cacheLis.Addr().String())
	}
	var remoteSrv *grpc.Server
	if cfg.ControlListen != "" {
		remoteLis, err := net.Listen("tcp", cfg.ControlListen)
		if err != nil {
			agentLis.Close()
			controlLis.Close()
			return err
		}
		remoteTLS := grpc.Creds(credentials.NewTLS(&tls.Config{
			GetCertificate: certs.get,
			ClientAuth:     tls.RequireAndVerifyClientCert,
			ClientCAs:      ca.Pool(),
			MinVersion:     tls.VersionTLS13,
		}))
		opts := append(recovering(log), controlMax, remoteTLS)
		remoteSrv = grpc.NewServer(append(opts, cliOnly()...)...)
		nixmoxv1.RegisterControlServiceServer(remoteSrv, &ControlAPI{Store: st, Agents: hub, CA: ca, Controller: controller})
		go func() { errs <- remoteSrv.Serve(remoteLis) }()
		log.Info("remote control", "address", remoteLis.Addr().String())
	}
	if cfg.HTTPListen != "" {
		httpLis, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			agentLis.Close()
			controlLis.Close()
			return err
		}
		page := &StatusPage{Control: control, Store: st, Metrics: metrics, Scraped: func() { log.Debug("metrics scraped") }}
		httpSrv := &http.Server{Handler: page.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- httpSrv.Serve(httpLis) }()
		defer httpSrv.Close()
		log.Info("status page", "url", "http://"+httpLis.Addr().String()+"/")
	}
	go func() { errs <- agentSrv.Serve(agentLis) }()
	go func() { errs <- controlSrv.Serve(controlLis) }()
	log.Info("serving", "agents", agentLis.Addr().String(), "control", cfg.ControlSocket)
	if cfg.Ready != nil {
		cfg.Ready(agentLis.Addr().String())
	}
	// A rollout this server was running when it stopped goes on.
	go func() {
		if err := controller.Resume(ctx); err != nil {
			log.Error("resuming the interrupted rollout", "error", err)
		}
	}()
	select {
	case <-ctx.Done():
	case err = <-errs:
		err = fmt.Errorf("serving: %w", err)
	}
	// Agent streams and watches never end on their own: give calls in
	// flight a moment, then cut what is left.
	stopped := make(chan struct{})
	go func() {
		agentSrv.GracefulStop()
		controlSrv.GracefulStop()
		if remoteSrv != nil {
			remoteSrv.GracefulStop()
		}
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		agentSrv.Stop()
		controlSrv.Stop()
		if remoteSrv != nil {
			remoteSrv.Stop()
		}
	}
	log.Info("stopped")
	return err
}

// agentTLS is the agent listener's TLS: TLS 1.3, the server's certificate
// from getCert, and a client certificate verified against the server's CA
// when one is given — Enroll has none yet; Connect requires one, and a
// certificate from another CA fails the handshake.
func agentTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), ca *pki.CA) *tls.Config {
	return &tls.Config{
		GetCertificate: getCert,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      ca.Pool(),
		MinVersion:     tls.VersionTLS13,
	}
}

// serverCerts gives each TLS handshake a certificate for the address the
// agent reached: the configured names, and any address of this machine
// the connection came in on (a server listening on every address, as the
// local provider's agents reach it at the bridge's gateway). Certificates
// are made on first use and kept.
type serverCerts struct {
	ca    *pki.CA
	hosts []string
	base  tls.Certificate

	mu   sync.Mutex
	byIP map[string]*tls.Certificate
}

func newServerCerts(ca *pki.CA, hosts []string) (*serverCerts, error) {
	base, err := ca.ServerCert(hosts)
	if err != nil {
		return nil, err
	}
	return &serverCerts{ca: ca, hosts: hosts, base: base, byIP: map[string]*tls.Certificate{}}, nil
}

func (c *serverCerts) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName != "" || hello.Conn == nil {
		return &c.base, nil // a name: the configured ones are in the base certificate
	}
	addr, ok := hello.Conn.LocalAddr().(*net.TCPAddr)
	if !ok || slices.Contains(c.hosts, addr.IP.String()) {
		return &c.base, nil
	}
	ip := addr.IP.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert := c.byIP[ip]; cert != nil {
		return cert, nil
	}
	cert, err := c.ca.ServerCert(append(slices.Clone(c.hosts), ip))
	if err != nil {
		return nil, err
	}
	c.byIP[ip] = &cert
	return &cert, nil
}

// listenTCP listens on addr with IP_FREEBIND, as systemd's FreeBind=
// does: an address that is not on this machine yet — the local
// provider's gateway, whose bridge comes up with the first rollout — is
// bound now and receives once it exists.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		// Best effort: a kernel without the option (IPV6_FREEBIND came in
		// 4.15) still binds an address that exists, and says so plainly
		// for one that does not.
		return c.Control(func(fd uintptr) {
			if network == "tcp6" {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			}
			_ = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		})
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
