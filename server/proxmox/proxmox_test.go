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

	"github.com/nixmox/nixmox/pkg/manifest"
)

const testToken = "root@pam!nixmox"
const testSecret = "00000000-1111-2222-3333-444444444444"

type harness struct {
	fake *fakepve.Fake
	p    *Provider
	dir  string
}

// newHarness runs the fake over TLS (its certificate trusted through
// CAFile, as a real server's would be) and a provider pointed at it whose
// push command is a script recording what it was given (a stand-in for
// `pct push`, which needs a Proxmox host).
func newHarness(t *testing.T) *harness {
	t.Helper()
	fake := fakepve.New("pve1", testToken+"="+testSecret)
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
	pct := filepath.Join(dir, "fake-pct")
	if err := os.WriteFile(pct, []byte(fakepve.PctScript(filepath.Join(dir, "pushed"))), 0o755); err != nil {
		t.Fatal(err)
	}
	p := New(Config{URL: srv.URL + "/api2/json", TokenID: testToken, TokenFile: secret, CAFile: ca, Node: "pve1",
		Storage: "local-lvm", Template: "local:vztmpl/nixos-24.11.tar.xz", Bridge: "vmbr0", Pct: pct, Dir: filepath.Join(dir, "state")})
	return &harness{fake: fake, p: p, dir: dir}
}

func testManifest(t *testing.T, services string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(`{"network": {"domain": "home.arpa", "dns_server": "10.40.0.2", "gateway": "10.40.0.1", "network_cidr": "10.40.0.0/24", "vlan_tag": 40},
  "services": {`+services+`}}`), manifest.FormatJSON, "test.json")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func enroll(_ context.Context, svc string) ([]byte, error) {
	return []byte(`{"token": "secret-token-of-` + svc + `"}`), nil
}

// TestCreateUpdateDestroyAgainstFakeProxmox: against the HTTP fake of the
// Proxmox API, a container is created with the manifest's settings and its
// enrollment file pushed (never on a command line or in the log); applying
// again changes nothing; a changed manifest updates it and says what; a
// failure mid-way leaves the container known to the inventory; destroy
// removes what it made.
func TestCreateUpdateDestroyAgainstFakeProxmox(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	m := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "resources": {"cores": 2, "memory": 1024, "disk_gb": 8}}`)
	var log bytes.Buffer
	if err := h.p.Ensure(ctx, m, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatalf("%v\nrequests: %v", err, h.fake.Requests())
	}
	ct := h.fake.Container(200)
	if ct == nil {
		t.Fatalf("no container 200; requests: %v", h.fake.Requests())
	}
	for k, want := range map[string]string{
		"hostname": "dns", "cores": "2", "memory": "1024", "rootfs": "local-lvm:vm-200-disk-0,size=8G", "onboot": "1", "unprivileged": "1",
		"features": "nesting=1", "nameserver": "10.40.0.2", "searchdomain": "home.arpa",
		"net0": "name=eth0,bridge=vmbr0,ip=10.40.0.2/24,gw=10.40.0.1,tag=40",
	} {
		if ct.Config[k] != want {
			t.Errorf("config %s = %q, want %q", k, ct.Config[k], want)
		}
	}
	if ct.Status != "running" {
		t.Errorf("container status %s", ct.Status)
	}
	pushed, err := os.ReadFile(filepath.Join(h.dir, "pushed", "200", "enroll.json"))
	if err != nil || !strings.Contains(string(pushed), "secret-token-of-dns") {
		t.Errorf("the enroll file was not delivered: %q %v", pushed, err)
	}
	if strings.Contains(log.String(), "secret-token") || strings.Contains(strings.Join(h.fake.Requests(), " "), "secret-token") {
		t.Error("the token reached the log or the API")
	}
	if left, _ := filepath.Glob(filepath.Join(h.dir, "state", "enroll-*")); len(left) != 0 {
		t.Errorf("the enroll file was left on the host: %v", left)
	}

	// Again: nothing to do, nothing written.
	h.fake.Requests()
	log = bytes.Buffer{}
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

	// A changed manifest: updated in place, and said what.
	m2 := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "resources": {"cores": 2, "memory": 2048, "disk_gb": 8}}`)
	// What will change, before it does (apply --dry-run shows it).
	if obs, err := h.p.Observe(ctx, m2, []string{"dns"}); err != nil || obs != "dns: [memory 1024 → 2048]\n" {
		t.Errorf("Observe = %q, %v", obs, err)
	}
	if err := h.p.Ensure(ctx, m2, []string{"dns"}, true, enroll, &log); err != nil {
		t.Fatalf("%v\nrequests: %v", err, h.fake.Requests())
	}
	if h.fake.Container(200).Config["memory"] != "2048" || !strings.Contains(log.String(), "updating dns (vmid 200): memory 1024 → 2048") {
		t.Errorf("memory %s; log:\n%s", h.fake.Container(200).Config["memory"], log.String())
	}

	// A container that exists but that nixmox did not make is not adopted.
	h.fake.Put(300, &fakepve.CT{Config: map[string]string{"hostname": "other"}, Status: "running"})
	m3 := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "resources": {"cores": 2, "memory": 2048, "disk_gb": 8}},
  "mail": {"ip": "10.40.0.30", "hostname": "mail.home.arpa", "vmid": 300}`)
	if err := h.p.Ensure(ctx, m3, []string{"dns", "mail"}, true, enroll, &log); err == nil || !strings.Contains(err.Error(), "vmid 300 exists and nixmox did not make it") {
		t.Errorf("adopting a foreign container: %v", err)
	}
	h.fake.Put(300, nil)

	// Failure mid-way: the create task fails; the inventory already knows
	// the container, so Destroy cleans up whatever exists.
	h.fake.FailCreate(201)
	m4 := testManifest(t, `"dns": {"ip": "10.40.0.2", "hostname": "dns.home.arpa", "vmid": 200, "resources": {"cores": 2, "memory": 2048, "disk_gb": 8}},
  "web": {"ip": "10.40.0.10", "hostname": "web.home.arpa", "vmid": 201}`)
	err = h.p.Ensure(ctx, m4, []string{"dns", "web"}, true, enroll, &log)
	if err == nil || !strings.Contains(err.Error(), "services.web (vmid 201): creating the container") || !strings.Contains(err.Error(), "unable to create CT 201") {
		t.Errorf("a failed create: %v", err)
	}
	inv, _ := h.p.load()
	if inv.Containers["web"] != 201 {
		t.Errorf("the inventory does not know the half-made container: %v", inv.Containers)
	}

	if err := h.p.Destroy(ctx, &log); err != nil {
		t.Fatalf("%v\nrequests: %v", err, h.fake.Requests())
	}
	if n := h.fake.Len(); n != 0 {
		t.Errorf("%d containers left after Destroy", n)
	}
	if inv, _ := h.p.load(); len(inv.Containers) != 0 {
		t.Errorf("inventory after Destroy: %v", inv.Containers)
	}
}
