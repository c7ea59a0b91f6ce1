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
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server/store"
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
	// CacheListen, if set, serves the signed binary cache over HTTP there
	// (for agents on other hosts); its URL uses the first AgentHosts entry.
	// Otherwise agents pull from file:// (the same host).
	CacheListen string
	Log         hclog.Logger
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
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	ca, err := pki.LoadOrCreate(filepath.Join(cfg.StateDir, "ca"))
	if err != nil {
		return err
	}
	cert, err := ca.ServerCert(append([]string{"127.0.0.1", "localhost"}, cfg.AgentHosts...))
	if err != nil {
		return err
	}
	agents := &AgentAPI{Store: st, CA: ca, Log: log.Named("agents")}
	agentSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven, // Enroll has none yet; Connect requires one
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})))
	nixmoxv1.RegisterAgentServiceServer(agentSrv, agents)
	controlSrv := grpc.NewServer()
	cacheKey, err := nix.LoadOrCreateCacheKey(ctx, filepath.Join(cfg.StateDir, "cache-key"), "nixmox")
	if err != nil {
		return fmt.Errorf("the binary cache's signing key: %w", err)
	}
	controller := &Controller{Store: st, Agents: agents, Log: log.Named("rollout"),
		CacheDir: filepath.Join(cfg.StateDir, "cache"), CacheKey: cacheKey}
	nixmoxv1.RegisterControlServiceServer(controlSrv, &ControlAPI{Store: st, Agents: agents, Controller: controller})

	agentLis, err := net.Listen("tcp", cfg.AgentListen)
	if err != nil {
		return err
	}
	if err := os.Remove(cfg.ControlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
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
		cacheLis, err := net.Listen("tcp", cfg.CacheListen)
		if err != nil {
			agentLis.Close()
			controlLis.Close()
			return err
		}
		host := "127.0.0.1"
		if len(cfg.AgentHosts) > 0 {
			host = cfg.AgentHosts[0]
		}
		_, port, _ := net.SplitHostPort(cacheLis.Addr().String())
		controller.CacheURL = "http://" + net.JoinHostPort(host, port)
		// Read-only, and everything in it is signed: agents trust only the
		// server's key, so the transport needs no more.
		cacheSrv := &http.Server{Handler: http.FileServer(http.Dir(controller.CacheDir)), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- cacheSrv.Serve(cacheLis) }()
		defer cacheSrv.Close()
		log.Info("binary cache", "url", controller.CacheURL)
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
	agentSrv.GracefulStop()
	controlSrv.GracefulStop()
	log.Info("stopped")
	return err
}
