package fakepve_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fakepve"
	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/pveschema"
)

const token = "root@pam!nixmox=secret"

type api struct {
	t    *testing.T
	fake *fakepve.Fake
	url  string
}

func newAPI(t *testing.T) *api {
	schema, err := pveschema.Load(fixtures.Shared(t, "schemas/pve-api.lxc.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := fakepve.New(schema, token, "pve1", "pve2")
	f.AddTemplate("pve1", "local:vztmpl/nixos.tar.xz")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return &api{t: t, fake: f, url: srv.URL + "/api2/json"}
}

// do sends a request as a client of the API does and returns the status
// line and the body's data.
func (a *api) do(method, path string, params url.Values) (string, any) {
	a.t.Helper()
	var body io.Reader
	target := a.url + path
	if method == "POST" || method == "PUT" {
		body = strings.NewReader(params.Encode())
	} else if len(params) > 0 {
		target += "?" + params.Encode()
	}
	req, _ := http.NewRequest(method, target, body)
	req.Header.Set("Authorization", "PVEAPIToken="+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data any `json:"data"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.Status, out.Data
}

// finish polls a task to its end.
func (a *api) finish(upid any) string {
	a.t.Helper()
	for range 5 {
		_, d := a.do("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid.(string))+"/status", nil)
		if m := d.(map[string]any); m["status"] == "stopped" {
			return m["exitstatus"].(string)
		}
	}
	a.t.Fatal("the task never ended")
	return ""
}

func createParams(vmid string) url.Values {
	return url.Values{"vmid": {vmid}, "ostemplate": {"local:vztmpl/nixos.tar.xz"}, "hostname": {"dns"}, "memory": {"512"},
		"nameserver": {"10.0.0.2"}, "net0": {"name=eth0,bridge=vmbr0,ip=10.0.0.2/24"}, "rootfs": {"local-lvm:8"}}
}

// TestFakeRefusesWhatPVERefuses: the requests of the provider before issue
// #15 — each was accepted by the old fake — and other requests a real PVE
// 8 refuses, refused the same way (status, reason phrase).
func TestFakeRefusesWhatPVERefuses(t *testing.T) {
	a := newAPI(t)
	// Finding 1: Telmate's LxcTemplate.String() of "local" and
	// "vztmpl/nixos.tar.xz" sent vztmpl/ twice; parse_volname refuses it.
	p := createParams("200")
	p.Set("ostemplate", "local:vztmpl/vztmpl/nixos.tar.xz")
	if status, _ := a.do("POST", "/nodes/pve1/lxc", p); status != "500 unable to parse directory volume name 'vztmpl/vztmpl/nixos.tar.xz'" {
		t.Errorf("a doubled vztmpl/: %s", status)
	}
	// Booleans are 0 or 1, parameters must be declared.
	p = createParams("200")
	p.Set("onboot", "true")
	p.Set("firewall", "1")
	if status, _ := a.do("POST", "/nodes/pve1/lxc", p); status != "400 Parameter verification failed." {
		t.Errorf("onboot=true and an unknown parameter: %s", status)
	}

	_, upid := a.do("POST", "/nodes/pve1/lxc", createParams("200"))
	// Locked while its create runs.
	if status, _ := a.do("PUT", "/nodes/pve1/lxc/200/config", url.Values{"memory": {"1024"}}); status != "500 CT 200 is locked (create)" {
		t.Errorf("a change during the create: %s", status)
	}
	if exit := a.finish(upid); exit != "OK" {
		t.Fatalf("create: %s", exit)
	}
	_, upid = a.do("POST", "/nodes/pve1/lxc/200/status/start", nil)
	a.finish(upid)

	// Finding 5: a running container takes nameserver only at its next
	// start; GET config shows the pending value unless current=1, so a diff
	// without current=1 sees nothing to do.
	if status, _ := a.do("PUT", "/nodes/pve1/lxc/200/config", url.Values{"nameserver": {"10.0.0.3"}, "memory": {"1024"}}); !strings.HasPrefix(status, "200") {
		t.Fatalf("update: %s", status)
	}
	_, withPending := a.do("GET", "/nodes/pve1/lxc/200/config", nil)
	_, current := a.do("GET", "/nodes/pve1/lxc/200/config", url.Values{"current": {"1"}})
	if withPending.(map[string]any)["nameserver"] != "10.0.0.3" || current.(map[string]any)["nameserver"] != "10.0.0.2" || current.(map[string]any)["memory"] != float64(1024) {
		t.Errorf("config %v, current %v", withPending, current)
	}
	// The digest changes with each write and is checked.
	digest := current.(map[string]any)["digest"].(string)
	a.do("PUT", "/nodes/pve1/lxc/200/config", url.Values{"cores": {"2"}})
	if status, _ := a.do("PUT", "/nodes/pve1/lxc/200/config", url.Values{"cores": {"3"}, "digest": {digest}}); !strings.Contains(status, "detected modified configuration") {
		t.Errorf("a stale digest: %s", status)
	}
	// Finding 10: the vmid is taken (here by a VM on another node): PVE
	// refuses the create.
	a.fake.Put(201, &fakepve.Guest{Type: "qemu", Node: "pve2", Status: "running", Config: map[string]string{"name": "win"}})
	if status, _ := a.do("POST", "/nodes/pve1/lxc", createParams("201")); status != "500 unable to create CT 201 - VM 201 already exists on node 'pve2'" {
		t.Errorf("a taken vmid: %s", status)
	}
	// Refused while running, and while HA manages it without purge.
	if status, _ := a.do("DELETE", "/nodes/pve1/lxc/200", nil); status != "500 CT 200 is running - destroy failed" {
		t.Errorf("deleting a running container: %s", status)
	}
	a.do("POST", "/cluster/ha/resources", url.Values{"sid": {"ct:200"}})
	_, upid = a.do("POST", "/nodes/pve1/lxc/200/status/shutdown", nil)
	a.finish(upid)
	if status, _ := a.do("DELETE", "/nodes/pve1/lxc/200", nil); !strings.Contains(status, "used in HA resources and purge parameter not set") {
		t.Errorf("deleting an HA-managed container without purge: %s", status)
	}
	// /cluster/resources lists everyone's guests, QEMU ones too.
	_, list := a.do("GET", "/cluster/resources", url.Values{"type": {"vm"}})
	if n := len(list.([]any)); n != 2 {
		t.Errorf("%d guests listed, want the container and the VM", n)
	}
}
