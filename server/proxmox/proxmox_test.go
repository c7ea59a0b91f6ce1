package proxmox

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fakepve"
	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/pveschema"
	"github.com/nixmox/nixmox/pkg/manifest"
)

const testToken = "root@pam!nixmox"
const testSecret = "00000000-1111-2222-3333-444444444444"
const testTemplate = "local:vztmpl/nixos-system-x86_64-linux.tar.xz"

type harness struct {
	fake *fakepve.Fake
	p    *Provider
	dir  string
	pct  string // the pct stand-in's root
}

// newHarness runs the fake of the Proxmox API — checked against the
// official PVE 8.4 schema, nodes pve1 and pve2 — over TLS (its certificate
// trusted through CAFile, as a real server's would be), with the pct
// stand-in of node pve1, and a provider pointed at them.
func newHarness(t *testing.T) *harness {
	t.Helper()
	schema, err := pveschema.Load(fixtures.Shared(t, "schemas/pve-api.lxc.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake := fakepve.New(schema, testToken+"="+testSecret, "pve1", "pve2")
	srv := httptest.NewTLSServer(fake)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "pct")
	fake.UsePct(root, "pve1")
	pct := filepath.Join(dir, "fake-pct")
	if err := os.WriteFile(pct, []byte(fakepve.PctScript(root)), 0o755); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(dir, "nixmox-agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\n# the agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fake.AddTemplate("pve1", testTemplate)
	fake.AddTemplate("pve2", testTemplate)
	p := New(Config{URL: srv.URL + "/api2/json", TokenID: testToken, TokenFile: secret, CAFile: ca, Node: "pve1",
		Storage: "local-lvm", Template: testTemplate, Bridge: "vmbr0", Pct: pct, AgentBinary: agent,
		ServerAddress: "10.40.0.1:7443", Dir: filepath.Join(dir, "state")})
	for path, privs := range p.Privileges() {
		fake.Grant(path, privs...)
	}
	return &harness{fake: fake, p: p, dir: dir, pct: root}
}

func testManifest(t *testing.T, services string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(`{"network": {"domain": "home.arpa", "dns_server": "10.40.0.2", "gateway": "10.40.0.1", "network_cidr": "10.40.0.0/24", "vlan_tag": 40,
  "ssh_keys": {"admin": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJtest admin@lab"]}},
  "services": {`+services+`}}`), manifest.FormatJSON, "test.json")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func enroll(_ context.Context, svc string) ([]byte, error) {
	return []byte(`{"token": "secret-token-of-` + svc + `"}`), nil
}

const dnsService = `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "tags": ["core"], "resources": {"cores": 2, "memory": 1024, "disk_gb": 8}}`

// TestCreateStartDeliverAgainstFakeProxmox: a container is created from
// the stock template with every field the spec has (generate's
// containers/<s>.json is exactly what is sent), in the pool, tagged
// nixmox; started; the agent and its enrollment file go into a persistent
// directory made inside the running container (never on a command line, in
// the log or the API); the agent is started as a transient unit. Applying
// again writes nothing.
func TestCreateStartDeliverAgainstFakeProxmox(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	m := testManifest(t, dnsService)
	var log bytes.Buffer
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatalf("%v\nrequests: %v", err, h.fake.Requests())
	}
	g := h.fake.Guest(200)
	if g == nil {
		t.Fatalf("no container 200; requests: %v", h.fake.Requests())
	}
	// The spec is generate's (render.ContainerOf); the fake kept what it
	// was sent.
	spec := h.p.spec(m, m.Service("dns")).Params()
	for k, want := range spec {
		got := g.Config[k]
		switch k {
		case "vmid", "ostemplate", "ssh-public-keys", "pool":
			continue // not kept in the config
		case "rootfs":
			want = "local-lvm:vm-200-disk-0,size=8G"
		case "net0":
			got, want = withoutKeys(got, "hwaddr"), withoutKeys(want)
		}
		if got != want {
			t.Errorf("config %s = %q, want %q", k, got, want)
		}
	}
	if spec["tags"] != "nixmox;core" || g.Pool != "nixmox" || g.Status != "running" || g.Node != "pve1" {
		t.Errorf("tags %q, pool %q, status %s, node %s", spec["tags"], g.Pool, g.Status, g.Node)
	}
	pushed, err := os.ReadFile(filepath.Join(h.pct, "200", "rootfs", "var", "lib", "nixmox-agent", "enroll.json"))
	if err != nil || !strings.Contains(string(pushed), "secret-token-of-dns") {
		t.Errorf("the enroll file was not delivered: %q %v", pushed, err)
	}
	if st, err := os.Stat(filepath.Join(h.pct, "200", "rootfs", "var", "lib", "nixmox-agent", "nixmox-agent")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the agent was not delivered: %v", err)
	}
	execs, _ := os.ReadFile(filepath.Join(h.pct, "200", "exec.log"))
	if !strings.Contains(string(execs), "systemd-run --unit=nixmox-agent-bootstrap") || !strings.Contains(string(execs), "--server 10.40.0.1:7443 --service dns --enroll-file /var/lib/nixmox-agent/enroll.json") {
		t.Errorf("the agent was not started: %s", execs)
	}
	if strings.Contains(log.String()+string(execs), "secret-token") || strings.Contains(strings.Join(h.fake.Requests(), " "), "secret-token") {
		t.Error("the token reached the log, a command line or the API")
	}
	inv, _ := h.p.load()
	if e := inv.Containers["dns"]; e == nil || e.Stage != stageAgent || e.VMID != 200 || e.Hostname != "dns" {
		t.Errorf("inventory %+v", inv.Containers["dns"])
	}

	// Again: nothing to do, nothing written.
	log.Reset()
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	for _, r := range h.fake.Requests() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("an unchanged container was written: %s", r)
		}
	}
	if log.Len() != 0 {
		t.Errorf("an unchanged Ensure said: %s", log.String())
	}
}

func requestsLike(reqs []string, prefix string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// TestUpdatesTakeEffect: a change a running container takes at once
// (memory, cores) is written live; one it takes only at start (nameserver,
// searchdomain) is pending in Proxmox — read with current=1, the provider
// sees it is not in effect — and with restart = "on-change" the container
// is shut down cleanly and started so that it is; with "never" it stays
// pending and Observe says so. A bigger disk is grown through resize; a
// smaller one is refused before anything is written.
func TestUpdatesTakeEffect(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var log bytes.Buffer
	if err := h.p.Ensure(ctx, testManifest(t, dnsService), []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	h.fake.Requests()

	never := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "tags": ["core"], "restart": "never", "resources": {"cores": 2, "memory": 2048, "disk_gb": 8}}`)
	never.Network.DNSServer = "10.40.0.3"
	log.Reset()
	if err := h.p.Ensure(ctx, never, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	g := h.fake.Guest(200)
	if g.Config["memory"] != "2048" || g.Config["nameserver"] != "10.40.0.2" || g.Pending["nameserver"] != "10.40.0.3" || g.Status != "running" {
		t.Errorf("restart never: memory %s, nameserver %s (pending %q), %s", g.Config["memory"], g.Config["nameserver"], g.Pending["nameserver"], g.Status)
	}
	if !strings.Contains(log.String(), `pending until the container restarts (restart = "never")`) {
		t.Errorf("the pending change is not said:\n%s", log.String())
	}
	if obs, err := h.p.Observe(ctx, never, []string{"dns"}); err != nil || !strings.Contains(obs, "pending [nameserver]") {
		t.Errorf("Observe = %q, %v", obs, err)
	}

	onChange := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "tags": ["core"], "resources": {"cores": 2, "memory": 2048, "disk_gb": 12}}`)
	onChange.Network.DNSServer = "10.40.0.3"
	h.fake.Requests()
	log.Reset()
	if err := h.p.Ensure(ctx, onChange, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	g = h.fake.Guest(200)
	if g.Config["nameserver"] != "10.40.0.3" || len(g.Pending) != 0 || g.Status != "running" || !strings.Contains(g.Config["rootfs"], "size=12G") {
		t.Errorf("restart on-change: nameserver %s, pending %v, %s, rootfs %s", g.Config["nameserver"], g.Pending, g.Status, g.Config["rootfs"])
	}
	reqs := h.fake.Requests()
	if requestsLike(reqs, "POST /nodes/pve1/lxc/200/status/shutdown") != 1 || requestsLike(reqs, "POST /nodes/pve1/lxc/200/status/stop") != 0 || requestsLike(reqs, "PUT /nodes/pve1/lxc/200/resize") != 1 {
		t.Errorf("want one clean shutdown, no stop, one resize: %v", reqs)
	}

	smaller := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "tags": ["core"], "resources": {"cores": 4, "memory": 4096, "disk_gb": 4}}`)
	smaller.Network.DNSServer = "10.40.0.3"
	err := h.p.Ensure(ctx, smaller, []string{"dns"}, true, enroll, &log)
	if err == nil || !strings.Contains(err.Error(), "Proxmox cannot shrink a container's disk") {
		t.Errorf("a smaller disk: %v", err)
	}
	for _, r := range h.fake.Requests() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("a refused update wrote %s", r)
		}
	}
	if g := h.fake.Guest(200); g.Config["memory"] != "2048" {
		t.Errorf("half an update: memory %s", g.Config["memory"])
	}
}

// TestResumeFromEachStage: a create task that fails, a start that fails, a
// delivery that fails — each leaves the stage it reached in the inventory,
// and the next Ensure goes on from there, doing nothing twice.
func TestResumeFromEachStage(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	m := testManifest(t, dnsService)
	var log bytes.Buffer
	stage := func() string {
		inv, _ := h.p.load()
		if e := inv.Containers["dns"]; e != nil {
			return e.Stage
		}
		return ""
	}

	h.fake.FailTask("vzcreate", 200)
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err == nil || h.fake.Guest(200) != nil || stage() != stageRequested {
		t.Fatalf("a failed create: %v, guest %v, stage %q", err, h.fake.Guest(200), stage())
	}
	h.fake.FailTask("vzstart", 200)
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err == nil || stage() != stageCreated {
		t.Fatalf("a failed start: %v, stage %q", err, stage())
	}
	agent := h.p.cfg.AgentBinary
	h.p.cfg.AgentBinary = filepath.Join(h.dir, "missing-agent")
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err == nil || stage() != stageStarted {
		t.Fatalf("a failed delivery: %v, stage %q", err, stage())
	}
	h.p.cfg.AgentBinary = agent
	h.fake.Requests()
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err != nil || stage() != stageAgent {
		t.Fatalf("resumed: %v, stage %q", err, stage())
	}
	reqs := h.fake.Requests()
	if requestsLike(reqs, "POST /nodes/pve1/lxc") != 0 {
		t.Errorf("the resumed Ensure created or started again: %v", reqs)
	}
}

// TestOnlyItsOwnContainers: guests nixmox did not make — a container
// without the nixmox tag, a QEMU VM — are never adopted, changed or
// deleted, even when their vmids are the manifest's or the inventory's; a
// service without vmid gets the next free one; removing a service shuts
// its container down and deletes it with purge and its unreferenced disks.
func TestOnlyItsOwnContainers(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.fake.Put(300, &fakepve.Guest{Type: "lxc", Node: "pve1", Status: "running", Config: map[string]string{"hostname": "other", "tags": "prod"}})
	h.fake.Put(301, &fakepve.Guest{Type: "qemu", Node: "pve2", Status: "running", Config: map[string]string{"name": "windows"}})
	var log bytes.Buffer
	m := testManifest(t, `"mail": {"ip": "10.40.0.30", "hostname": "mail.home.arpa", "vmid": 300},
  "vm": {"ip": "10.40.0.31", "hostname": "vm.home.arpa", "vmid": 301},
  "web": {"ip": "10.40.0.10", "hostname": "web.home.arpa"}`)
	err := h.p.Ensure(ctx, m, []string{"mail", "vm", "web"}, true, enroll, &log)
	if err == nil || !strings.Contains(err.Error(), "vmid 300 is taken by a lxc guest on node pve1 that nixmox did not make") ||
		!strings.Contains(err.Error(), "vmid 301 is taken by a qemu guest on node pve2") {
		t.Fatalf("foreign vmids: %v", err)
	}
	inv, _ := h.p.load()
	web := inv.Containers["web"]
	if web == nil || web.VMID != 100 || h.fake.Guest(100) == nil {
		t.Fatalf("web (no vmid) was not made at the next free id: %+v", web)
	}
	if inv.Containers["mail"] != nil || inv.Containers["vm"] != nil {
		t.Errorf("foreign guests entered the inventory: %v", inv.Containers)
	}

	// Someone replaced web's container by their own with the same vmid:
	// nixmox does not delete it.
	h.fake.Put(100, &fakepve.Guest{Type: "lxc", Node: "pve1", Status: "running", Config: map[string]string{"hostname": "web", "tags": "mine"}})
	if err := h.p.Ensure(ctx, testManifest(t, ""), nil, true, enroll, &log); err == nil || !strings.Contains(err.Error(), "has no \"nixmox\" tag") {
		t.Errorf("destroying a replaced container: %v", err)
	}
	if h.fake.Guest(100) == nil || h.fake.Guest(300) == nil || h.fake.Guest(301) == nil {
		t.Fatal("a guest nixmox did not make was deleted")
	}

	// Its own: shut down cleanly, deleted with purge.
	h.fake.Put(100, nil)
	m2 := testManifest(t, `"web": {"ip": "10.40.0.10", "hostname": "web.home.arpa"}`)
	inv, _ = h.p.load()
	delete(inv.Containers, "web")
	h.p.save(inv)
	if err := h.p.Ensure(ctx, m2, []string{"web"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	h.fake.Requests()
	if err := h.p.Ensure(ctx, testManifest(t, ""), nil, true, enroll, &log); err != nil {
		t.Fatalf("removing web: %v", err)
	}
	reqs := h.fake.Requests()
	if h.fake.Guest(100) != nil || requestsLike(reqs, "POST /nodes/pve1/lxc/100/status/shutdown") != 1 || requestsLike(reqs, "DELETE /nodes/pve1/lxc/100?destroy-unreferenced-disks=1&purge=1") != 1 {
		t.Errorf("removing web: guest %v, requests %v", h.fake.Guest(100), reqs)
	}
	if h.fake.Guest(300) == nil || h.fake.Guest(301) == nil {
		t.Error("the removal pass deleted a guest nixmox did not make")
	}
}

// TestPerNodePlacement: a service's node places its container; that node's
// storage and template (--proxmox-storage-on, --proxmox-template-on) are
// used, the check names a template missing there, and the agent goes in
// through that node's pct (--proxmox-pct-on).
func TestPerNodePlacement(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const zfsTemplate = "local:vztmpl/nixos-zfs.tar.xz"
	h.p.cfg.StorageOn = map[string]string{"pve2": "local-zfs"}
	h.p.cfg.TemplateOn = map[string]string{"pve2": zfsTemplate}
	for path, privs := range h.p.Privileges() {
		h.fake.Grant(path, privs...)
	}
	if problems := h.p.Check(ctx); len(problems) != 1 || !strings.Contains(problems[0], `the template `+zfsTemplate+` is not in storage "local" on node "pve2"`) {
		t.Errorf("a template missing on pve2: %q", problems)
	}
	h.fake.AddTemplate("pve2", zfsTemplate)
	if problems := h.p.Check(ctx); problems != nil {
		t.Errorf("with every template: %q", problems)
	}
	root2 := filepath.Join(h.dir, "pct-pve2")
	h.fake.UsePct(root2, "pve2")
	pct2 := filepath.Join(h.dir, "fake-pct-pve2")
	if err := os.WriteFile(pct2, []byte(fakepve.PctScript(root2)), 0o755); err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, `"db": {"ip": "10.40.0.3", "hostname": "db.home.arpa", "vmid": 210, "node": "pve2"}`)
	var log bytes.Buffer
	err := h.p.Ensure(ctx, m, []string{"db"}, true, enroll, &log)
	if err == nil || !strings.Contains(err.Error(), "give --proxmox-pct-on pve2=PROGRAM") {
		t.Fatalf("delivery on pve2 without its pct: %v", err)
	}
	h.p.cfg.PctOn = map[string]string{"pve2": pct2}
	if err := h.p.Ensure(ctx, m, []string{"db"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	g := h.fake.Guest(210)
	if g.Node != "pve2" || !strings.HasPrefix(g.Config["rootfs"], "local-zfs:") {
		t.Errorf("db on %s, rootfs %s", g.Node, g.Config["rootfs"])
	}
	if _, err := os.Stat(filepath.Join(root2, "210", "rootfs", "var", "lib", "nixmox-agent", "enroll.json")); err != nil {
		t.Errorf("not delivered through pve2's pct: %v", err)
	}
	if nodes := h.p.Nodes(); nodes["db"] != "pve2" {
		t.Errorf("Nodes() = %v", nodes)
	}
}
