package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRemoteCLI: with --control-listen, nixmox-cli reaches the server over
// mutual TLS with a certificate from `nixmox-server cli-cert`, and the
// audit names its user; no certificate, an agent's certificate, or one
// from another CA opens nothing.
func TestRemoteCLI(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	state := filepath.Join(dir, "server")
	remote := freePort(t)
	remote = "127.0.0.1:" + remote[strings.LastIndex(remote, ":")+1:]
	srv := run(t, "nixmox-server", "serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--socket", socket,
		"--control-listen", remote)
	line, _ := srv.await(t, 0, `serving: agents=`)
	agentAddr := line[strings.Index(line, "agents=")+len("agents=") : strings.Index(line, " control=")]

	alice := filepath.Join(dir, "alice")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "cli-cert", "alice", "--state-dir", state, "-o", alice).CombinedOutput(); err != nil {
		t.Fatalf("cli-cert: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(alice, "cli-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cli-key.pem: %v %v", fi, err)
	}
	cli := func(tlsDir string, args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), append([]string{"--server", remote, "--tls-dir", tlsDir}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cli(alice, "status"); err != nil || !strings.Contains(out, "SERVICE") {
		t.Fatalf("remote status: %v\n%s", err, out)
	}
	// An action over the remote listener is audited as alice's.
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "token", "dns", "--socket", socket, "-o", filepath.Join(dir, "enroll.json")).CombinedOutput(); err != nil {
		t.Fatalf("token: %v\n%s", err, out)
	}
	run(t, "nixmox-agent", "--server", agentAddr, "--service", "dns", "--enroll-file", filepath.Join(dir, "enroll.json"),
		"--state-dir", filepath.Join(dir, "agent"), "--profile", filepath.Join(dir, "profile", "system"))
	srv.await(t, 0, `agent connected: service=dns`)
	m := filepath.Join(dir, "m.json")
	if err := os.WriteFile(m, []byte(`{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "services": {"dns": {"ip": "10.9.0.2", "hostname": "dns.lab.test", "exec": ["true"]}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(alice, "apply", "-f", m); err != nil {
		t.Fatalf("remote apply: %v\n%s", err, out)
	}
	if out, err := cli(alice, "history"); err != nil || !strings.Contains(out, "cli/alice") {
		t.Errorf("history does not name alice: %v\n%s", err, out)
	}

	// The agent's certificate, signed by the same CA, is refused.
	agentTLS := filepath.Join(dir, "as-agent")
	if err := os.MkdirAll(agentTLS, 0o700); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"agent.pem": "cli.pem", "agent-key.pem": "cli-key.pem", "ca.pem": "ca.pem"} {
		data, err := os.ReadFile(filepath.Join(dir, "agent", from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(agentTLS, to), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := cli(agentTLS, "status"); err == nil || !strings.Contains(out, "not a nixmox-cli certificate") {
		t.Errorf("an agent's certificate opened the control API: %v\n%s", err, out)
	}
	// A certificate from another server's CA is refused.
	otherState := filepath.Join(dir, "other")
	other := run(t, "nixmox-server", "serve", "--state-dir", otherState, "--listen", "127.0.0.1:0", "--socket", filepath.Join(dir, "other.sock"))
	other.await(t, 0, `serving:`)
	mallory := filepath.Join(dir, "mallory")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "cli-cert", "mallory", "--state-dir", otherState, "-o", mallory).CombinedOutput(); err != nil {
		t.Fatalf("cli-cert: %v\n%s", err, out)
	}
	// Mallory trusts our server (its CA), so the client side of the
	// handshake succeeds; only our server's refusal of her certificate
	// can stop her.
	data, err := os.ReadFile(filepath.Join(alice, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mallory, "ca.pem"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// In TLS 1.3 the client learns of the refusal from the server's alert
	// or, when it writes first, from the connection the server closed.
	out, err := cli(mallory, "status")
	refused := regexp.MustCompile(`code = Unavailable desc = .*(unknown certificate authority|connection reset by peer|broken pipe|EOF)`)
	if err == nil || !refused.MatchString(out) || strings.Contains(out, "x509:") || strings.Contains(out, "failed to verify") {
		t.Errorf("another CA's certificate: %v, want the server to refuse it in the handshake (not a client-side trust failure)\n%s", err, out)
	}
	// Without a certificate at all, nixmox-cli says how to get one.
	if out, err := cli(filepath.Join(dir, "nothing"), "status"); err == nil || !strings.Contains(out, "nixmox-server cli-cert") {
		t.Errorf("without a certificate: %v\n%s", err, out)
	}
}
