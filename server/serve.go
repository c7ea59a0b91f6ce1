package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

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
	Log           hclog.Logger
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
	errs := make(chan error, 2)
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
