package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixmox/nixmox/pkg/pki"
)

func TestCAPersistsAndSignsAgents(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := pki.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := pki.LoadOrCreate(dir)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("reloaded a different CA: %v", err)
	}
	_, csr, err := pki.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignAgent(csr, "vaultwarden")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("agent certificate does not verify: %v", err)
	}
	if svc, err := pki.AgentService(cert); err != nil || svc != "vaultwarden" {
		t.Fatalf("service %q, %v", svc, err)
	}
	if _, err := pki.AgentService(ca.Cert); err == nil {
		t.Fatal("the CA certificate passed as an agent's")
	}
	if _, err := ca.SignAgent([]byte("not a csr"), "x"); err == nil {
		t.Fatal("signed garbage")
	}
}
