package e2e

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fakepve"
	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/pveschema"
)

// TestProxmoxProviderThroughServerAgainstFakeAPI runs nixmox-server with
// --provider proxmox against the fake of the Proxmox API (no Proxmox can
// run here; the fake checks every request against the official PVE 8.4
// schema) with two nodes, and the pct stand-in of the server's node: apply
// creates the containers (one with a vmid and ha = true, one without a
// vmid, which gets the next free one), starts them and brings up their
// agents; a dry run after a change names it; apply makes a changed memory
// (live) and nameserver (at restart) take effect; an unchanged apply
// writes nothing; removing a service deletes only its container and its
// HA resource.
func TestProxmoxProviderThroughServerAgainstFakeAPI(t *testing.T) {
	dir := t.TempDir()
	schema, err := pveschema.Load(fixtures.Shared(t, "schemas/pve-api.lxc.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake := fakepve.New(schema, "root@pam!nixmox=s3cret", "pve1", "pve2")
	api := httptest.NewTLSServer(fake)
	defer api.Close()
	ca := filepath.Join(dir, "pve-ca.pem")
	token := filepath.Join(dir, "token")
	pct, pct2 := filepath.Join(dir, "pct"), filepath.Join(dir, "pct-pve2")
	root, root2 := filepath.Join(dir, "pct-root"), filepath.Join(dir, "pct-root-pve2")
	fake.UsePct(root, "pve1")
	fake.UsePct(root2, "pve2")
	for path, data := range map[string]string{
		ca:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})),
		token: "s3cret\n",
		pct:   fakepve.PctScript(root),
		pct2:  fakepve.PctScript(root2), // stands in for a wrapper that runs pct on pve2
	} {
		if err := os.WriteFile(path, []byte(data), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The token's privileges (docs/proxmox.md), as serve checks them.
	for path, privs := range map[string][]string{
		"/pool/nixmox":                  {"VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt"},
		"/storage/local-lvm":            {"Datastore.AllocateSpace", "Datastore.Audit"},
		"/sdn/zones/localnetwork/vmbr0": {"SDN.Use"},
	} {
		fake.Grant(path, privs...)
	}
	// A guest of someone else's, on the other node.
	fake.Put(100, &fakepve.Guest{Type: "qemu", Node: "pve2", Status: "running", Config: map[string]string{"name": "windows"}})
	const template = "local:vztmpl/nixos-system-x86_64-linux.tar.xz"
	socket := filepath.Join(dir, "control.sock")
	args := []string{"serve", "--state-dir", filepath.Join(dir, "server"), "--listen", "127.0.0.1:0", "--host", "10.40.0.1", "--socket", socket,
		"--provider", "proxmox", "--proxmox-url", api.URL + "/api2/json", "--proxmox-ca-file", ca,
		"--proxmox-token-id", "root@pam!nixmox", "--proxmox-token-file", token, "--proxmox-node", "pve1",
		"--proxmox-template", template, "--proxmox-pct", pct, "--proxmox-pct-on", "pve2=" + pct2}
	// Without the template on the node the server refuses to start, and
	// says which template and where.
	out, err := exec.Command(filepath.Join(bin, "nixmox-server"), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `the template `+template+` is not in storage "local" on node "pve1"`) {
		t.Fatalf("serve without the template: %v, want exit 1 naming it:\n%s", err, out)
	}
	fake.AddTemplate("pve1", template)
	fake.AddTemplate("pve2", template)
	srv := run(t, "nixmox-server", args...)
	srv.await(t, 0, `serving: agents=`)
	m := filepath.Join(dir, "m.json")
	write := func(memory, dns string, withAPI bool) {
		// Exec services: no agent runs in a fake container, so nothing
		// waits for one.
		apiSvc := ""
		if withAPI {
			apiSvc = `, "api": {"ip": "10.40.0.11", "hostname": "api.home.arpa", "node": "pve2", "exec": ["true"], "interface": {"health": {"liveness": "true"}}}`
		}
		if err := os.WriteFile(m, []byte(`{"network": {"dns_server": "`+dns+`", "gateway": "10.40.0.1", "network_cidr": "10.40.0.0/24"},
  "services": {"web": {"ip": "10.40.0.10", "hostname": "web.home.arpa", "vmid": 150, "ha": true, "resources": {"memory": `+memory+`},
    "exec": ["true"], "interface": {"health": {"liveness": "true"}}}`+apiSvc+`}}`), 0o644); err != nil {
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
	write("512", "10.40.0.2", true)
	cli("apply", "-f", m)
	web, apiCT := fake.Guest(150), fake.Guest(101)
	if web == nil || web.Status != "running" || web.Config["memory"] != "512" || web.Config["hostname"] != "web" || web.Pool != "nixmox" {
		t.Fatalf("container 150: %+v", web)
	}
	if apiCT == nil || apiCT.Config["hostname"] != "api" || apiCT.Node != "pve2" {
		t.Fatalf("api (no vmid, node pve2) is not at the next free vmid 101 on pve2: %+v", apiCT)
	}
	if _, err := os.Stat(filepath.Join(root2, "101", "rootfs", "var", "lib", "nixmox-agent", "enroll.json")); err != nil {
		t.Errorf("api's agent was not delivered through pve2's pct: %v", err)
	}
	if out := cli("status"); !regexp.MustCompile(`(?m)^api\s.*\spve2\s*$`).MatchString(out) || !regexp.MustCompile(`(?m)^web\s.*\spve1\s*$`).MatchString(out) {
		t.Errorf("status does not show the nodes:\n%s", out)
	}
	if ha := fake.HA(); ha[150] != "started" || len(ha) != 1 {
		t.Errorf("HA resources %v, want web's only", ha)
	}
	if data, err := os.ReadFile(filepath.Join(root, "150", "rootfs", "var", "lib", "nixmox-agent", "enroll.json")); err != nil || !strings.Contains(string(data), `"token"`) {
		t.Errorf("enroll file: %q %v", data, err)
	}

	write("1024", "10.40.0.3", true)
	if out := cli("apply", "-f", m, "--dry-run"); !strings.Contains(out, "memory 512 → 1024") || !strings.Contains(out, "nameserver 10.40.0.2 → 10.40.0.3") {
		t.Errorf("dry run does not name the changes:\n%s", out)
	}
	cli("apply", "-f", m)
	if g := fake.Guest(150); g.Config["memory"] != "1024" || g.Config["nameserver"] != "10.40.0.3" || len(g.Pending) != 0 || g.Status != "running" {
		t.Errorf("after apply: memory %s, nameserver %s, pending %v, %s", g.Config["memory"], g.Config["nameserver"], g.Pending, g.Status)
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

	write("1024", "10.40.0.3", false)
	cli("apply", "-f", m)
	if fake.Guest(101) != nil || fake.Guest(150) == nil || fake.Guest(100) == nil {
		t.Errorf("removing api: api %v, web %v, the VM %v", fake.Guest(101) != nil, fake.Guest(150) != nil, fake.Guest(100) != nil)
	}
	if ha := fake.HA(); ha[150] != "started" {
		t.Errorf("web's HA resource went with api: %v", ha)
	}

	// web leaves too (an exec service stays, to keep the manifest valid):
	// its container and its HA resource go, the VM stays.
	if err := os.WriteFile(m, []byte(`{"network": {"dns_server": "10.40.0.3", "gateway": "10.40.0.1", "network_cidr": "10.40.0.0/24"},
  "services": {"api": {"ip": "10.40.0.11", "hostname": "api.home.arpa", "exec": ["true"], "interface": {"health": {"liveness": "true"}}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cli("apply", "-f", m)
	if fake.Guest(150) != nil || len(fake.HA()) != 0 || fake.Guest(100) == nil {
		t.Errorf("removing web: web %v, HA %v, the VM %v", fake.Guest(150) != nil, fake.HA(), fake.Guest(100) != nil)
	}
}
