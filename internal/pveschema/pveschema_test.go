package pveschema_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/pveschema"
)

func load(t *testing.T) *pveschema.Schema {
	t.Helper()
	s, err := pveschema.Load(fixtures.Shared(t, "schemas/pve-api.lxc.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRequestsCheckedAsPVEDoes: requests are checked against the official
// schema as the API server checks them — what it accepts passes, and each
// thing it refuses is refused with its parameter named.
func TestRequestsCheckedAsPVEDoes(t *testing.T) {
	s := load(t)
	good := url.Values{
		"vmid": {"200"}, "ostemplate": {"local:vztmpl/nixos.tar.xz"}, "hostname": {"dns.home.arpa"},
		"cores": {"2"}, "memory": {"1024"}, "swap": {"0"}, "onboot": {"1"}, "unprivileged": {"1"},
		"net0":   {"name=eth0,bridge=vmbr0,ip=10.0.0.2/24,gw=10.0.0.1,tag=20,firewall=1"},
		"rootfs": {"local-lvm:8"}, "tags": {"nixmox;dns"}, "pool": {"nixmox"},
		"nameserver": {"10.0.0.2"}, "searchdomain": {"home.arpa"}, "features": {"nesting=1"},
	}
	if err := s.Validate("POST", "/nodes/pve/lxc", good); err != nil {
		t.Fatalf("a good create was refused: %v", err)
	}
	// Every named format of what nixmox sends is really checked.
	if u := s.Unchecked(); len(u) != 0 {
		t.Errorf("named formats accepted unchecked in a create: %v", u)
	}
	for name, c := range map[string]struct {
		param, value, want string
	}{
		"boolean as true":   {"onboot", "true", "type check ('boolean') failed"},
		"integer with unit": {"memory", "1G", "type check ('integer') failed"},
		"below minimum":     {"memory", "8", "minimum value of 16"},
		"unknown parameter": {"firewall", "1", "not defined in schema"},
		"unknown net key":   {"net0", "name=eth0,bridge=vmbr0,vlan=20", "unknown key 'vlan'"},
		"net without name":  {"net0", "bridge=vmbr0", "format error name: property is missing"},
		"bad tag":           {"tags", "nix mox!", "invalid tag"},
		"bad hostname":      {"hostname", "dns_server", "format 'dns-name'"},
	} {
		t.Run(name, func(t *testing.T) {
			req := url.Values{}
			for k, v := range good {
				req[k] = v
			}
			req.Set(c.param, c.value)
			err := s.Validate("POST", "/nodes/pve/lxc", req)
			var pe *pveschema.Error
			if !errors.As(err, &pe) || pe.Status != 400 || pe.Reason != "Parameter verification failed." || !strings.Contains(pe.Errors[c.param], c.want) {
				t.Errorf("%s=%s: %v, want 400 naming %s with %q", c.param, c.value, err, c.param, c.want)
			}
		})
	}
	req := url.Values{}
	for k, v := range good {
		req[k] = v
	}
	req.Del("ostemplate")
	if err := s.Validate("POST", "/nodes/pve/lxc", req); err == nil || !strings.Contains(err.Error(), "ostemplate: property is missing") {
		t.Errorf("a create without ostemplate: %v", err)
	}
	if err := s.Validate("GET", "/nodes/pve/lxc/200/config", url.Values{"current": {"1"}}); err != nil {
		t.Errorf("GET config current=1: %v", err)
	}
	if err := s.Validate("DELETE", "/nodes/pve/lxc/200", url.Values{"purge": {"1"}, "destroy-unreferenced-disks": {"1"}}); err != nil {
		t.Errorf("DELETE with purge: %v", err)
	}
}
