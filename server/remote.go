package server

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nixmox/nixmox/pkg/pki"
)

// verifiedCert is the client certificate of a call over mutual TLS, nil
// for a call over the unix socket.
func verifiedCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// callerOf names who makes a control call, for the audit log: "cli/NAME"
// for a remote nixmox-cli (its certificate), "local" on the unix socket,
// whose permissions admit only the server's owner.
func callerOf(ctx context.Context) string {
	if cert := verifiedCert(ctx); cert != nil {
		if name, err := pki.CLIName(cert); err == nil {
			return "cli/" + name
		}
	}
	return "local"
}

// requireCLICert admits a call on the remote control listener only with a
// nixmox-cli certificate: an agent's certificate, signed by the same CA,
// opens nothing here.
func requireCLICert(ctx context.Context) error {
	cert := verifiedCert(ctx)
	if cert == nil {
		return status.Error(codes.Unauthenticated, "the control API needs a nixmox-cli client certificate")
	}
	if _, err := pki.CLIName(cert); err != nil {
		return status.Error(codes.PermissionDenied, "this certificate is not a nixmox-cli certificate")
	}
	return nil
}

// cliOnly are the interceptors of the remote control listener.
func cliOnly() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := requireCLICert(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := requireCLICert(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// WriteCLICert makes a key and a certificate for the remote nixmox-cli user
// name, signed by the CA in stateDir, and writes cli-key.pem (0600),
// cli.pem and ca.pem to dir (0700).
func WriteCLICert(stateDir, name, dir string) error {
	ca, err := pki.Load(filepath.Join(stateDir, "ca"))
	if err != nil {
		return err
	}
	keyPEM, csrPEM, err := pki.NewCSR()
	if err != nil {
		return err
	}
	certPEM, err := ca.SignCLI(csrPEM, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for file, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{"cli-key.pem": {keyPEM, 0o600}, "cli.pem": {certPEM, 0o644}, "ca.pem": {ca.PEM, 0o644}} {
		if err := pki.WriteAtomic(filepath.Join(dir, file), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
