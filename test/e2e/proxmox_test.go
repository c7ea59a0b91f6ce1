package e2e

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fakepve"
)

// TestProxmoxProviderThroughServerAgainstFakeAPI runs nixmox-server with
// --provider proxmox against the HTTP fake of the Proxmox API (no Proxmox
// can run here) and a stand-in pct: apply creates the container and
// delivers its enrollment file; a dry run after a change names it; apply
// updates it; an unchanged apply writes nothing.
func TestProxmoxProviderThroughServerAgainstFakeAPI(t *testing.T) {
	dir := t.TempDir()
	fake := fakepve.New("pve1", "root@pam!nixmox=s3cret")
	api := httptest.NewTLSServer(fake)
	defer api.Close()
	ca := filepath.Join(dir, "pve-ca.pem")
	token := filepath.Join(dir, "token")
	pct := filepath.Join(dir, "pct")
	for path, data := range map[string]string{
		ca:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})),
		token: "s3cret\n",
		pct:   fakepve.PctScript(filepath.Join(dir, "pushed")),
	} {
		if err := os.WriteFile(path, []byte(data), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	socket := filepath.Join(dir, "control.sock")
	args := []string{"serve", "--state-dir", filepath.Join(dir, "server"), "--listen", "127.0.0.1:0", "--socket", socket,
		"--provider", "proxmox", "--proxmox-url", api.URL + "/api2/json", "--proxmox-ca-file", ca,
		"--proxmox-token-id", "root@pam!nixmox", "--proxmox-token-file", token, "--proxmox-node", "pve1",
		"--proxmox-template", "local:vztmpl/nixos.tar.xz", "--proxmox-pct", pct}
	// Without the template on the node the server refuses to start, and
	// says which template and where.
	out, err := exec.Command(filepath.Join(bin, "nixmox-server"), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `the template local:vztmpl/nixos.tar.xz is not in storage "local" on node "pve1"`) {
		t.Fatalf("serve without the template: %v, want exit 1 naming it:\n%s", err, out)
	}
	fake.AddTemplate("local:vztmpl/nixos.tar.xz")
	srv := run(t, "nixmox-server", args...)
	srv.await(t, 0, `serving: agents=`)
	m := filepath.Join(dir, "m.json")
	write := func(memory string) {
		// An exec service: no agent runs in a fake container.
		if err := os.WriteFile(m, []byte(`{"network": {"dns_server": "10.40.0.2", "gateway": "10.40.0.1", "network_cidr": "10.40.0.0/24"},
  "services": {"web": {"ip": "10.40.0.10", "hostname": "web.home.arpa", "vmid": 150, "resources": {"memory": `+memory+`},
    "exec": ["true"], "interface": {"health": {"liveness": "true"}}}}}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), append(args, "--socket", socket)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nixmox-cli %s: %v\n%s\nserver:\n%s", strings.Join(args, " "), err, out, srv.log())
		}
		return string(out)
	}
	write("512")
	cli("apply", "-f", m)
	ct := fake.Container(150)
	if ct == nil || ct.Status != "running" || ct.Config["memory"] != "512" || ct.Config["hostname"] != "web" {
		t.Fatalf("container 150: %+v", ct)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "pushed", "150", "enroll.json")); err != nil || !strings.Contains(string(data), `"token"`) {
		t.Errorf("enroll file: %q %v", data, err)
	}

	write("1024")
	if out := cli("apply", "-f", m, "--dry-run"); !strings.Contains(out, "tf:infra") || !strings.Contains(out, "web: [memory 512 → 1024]") {
		t.Errorf("dry run does not name the change:\n%s", out)
	}
	cli("apply", "-f", m)
	if got := fake.Container(150).Config["memory"]; got != "1024" {
		t.Errorf("memory after apply: %s", got)
	}
	fake.Requests()
	if out := cli("apply", "-f", m); !strings.Contains(out, "unchanged") {
		t.Errorf("unchanged apply:\n%s", out)
	}
	for _, r := range fake.Requests() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("an unchanged apply wrote to Proxmox: %s", r)
		}
	}
}
