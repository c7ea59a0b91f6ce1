package plan_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
)

// contractPlan is the JSON contract, decoded strictly.
type contractPlan struct {
	Services []string `json:"services"`
	Steps    []struct {
		ID      string   `json:"id"`
		Phase   string   `json:"phase"`
		Service string   `json:"service"`
		Needs   []string `json:"needs"`
	} `json:"steps"`
}

var phases = map[string]bool{"tf:infra": true, "nix:core": true, "tf:auth-core": true,
	"tf:service-infra": true, "nix:service-config": true, "tf:service-config": true, "verify": true}

// TestPlanContract checks the JSON plan of every fixture against the
// contract, and that the plan orders what the manifest says: each
// service's first deploy step waits for the verify step of everything it
// depends on, while services that do not depend on each other do not wait
// for each other.
func TestPlanContract(t *testing.T) {
	fixtures.NeedNix(t)
	for _, f := range fixtures.Manifests(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			g := fixtures.Load(t, f)
			p, err := plan.New(g, plan.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := p.WriteJSON(&buf); err != nil {
				t.Fatal(err)
			}
			// WriteJSON streams; encoding/json is the reference for the bytes.
			want, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != string(want)+"\n" {
				t.Errorf("WriteJSON differs from encoding/json:\n%s\nwant:\n%s", got, want)
			}
			dec := json.NewDecoder(&buf)
			dec.DisallowUnknownFields()
			var cp contractPlan
			if err := dec.Decode(&cp); err != nil {
				t.Fatalf("plan JSON does not match the contract: %v", err)
			}
			checkContract(t, g, cp)
		})
	}
}

func checkContract(t *testing.T, g *graph.Graph, cp contractPlan) {
	t.Helper()
	m := g.Manifest()
	if len(cp.Services) != len(m.Enabled()) {
		t.Errorf("plan has %d services, manifest %d enabled", len(cp.Services), len(m.Enabled()))
	}
	pos := map[string]int{}
	needs := map[string][]string{}
	for i, s := range cp.Steps {
		if _, dup := pos[s.ID]; dup {
			t.Errorf("step %q listed twice", s.ID)
		}
		if !phases[s.Phase] {
			t.Errorf("step %q has phase %q", s.ID, s.Phase)
		}
		global := s.Phase == "tf:infra" || s.Phase == "tf:auth-core"
		if global != (s.Service == "") {
			t.Errorf("step %q: phase %q with service %q", s.ID, s.Phase, s.Service)
		}
		if s.Needs == nil {
			t.Errorf("step %q: needs is null, want a list", s.ID)
		}
		for _, n := range s.Needs {
			if _, ok := pos[n]; !ok {
				t.Errorf("step %q needs %q, which is not listed before it", s.ID, n)
			}
		}
		pos[s.ID] = i
		needs[s.ID] = s.Needs
	}
	// reach[x] = every step x waits for, transitively.
	reach := map[string]map[string]bool{}
	for _, s := range cp.Steps {
		r := map[string]bool{}
		for _, n := range s.Needs {
			r[n] = true
			for k := range reach[n] {
				r[k] = true
			}
		}
		reach[s.ID] = r
	}
	first := func(svc *manifest.Service) string {
		for _, s := range cp.Steps {
			if s.Service == svc.Name {
				return s.ID
			}
		}
		t.Fatalf("no step for service %q", svc.Name)
		return ""
	}
	dependsOn := map[string]map[string]bool{}
	for _, name := range g.Services() {
		dependsOn[name] = map[string]bool{}
		for _, d := range g.Closure(name) {
			dependsOn[name][d] = true
		}
	}
	for _, svc := range m.Enabled() {
		if _, ok := pos["verify:"+svc.Name]; !ok {
			t.Errorf("no verify step for %q", svc.Name)
		}
		start := first(svc)
		if !reach[start]["tf:infra"] {
			t.Errorf("%s does not wait for tf:infra", start)
		}
		for _, d := range svc.Dependencies() {
			if !reach[start]["verify:"+d.Service] {
				t.Errorf("%s does not wait for verify:%s (%s)", start, d.Service, strings.Join(d.Reasons(), ", "))
			}
		}
		for _, other := range m.Enabled() {
			if other == svc || dependsOn[svc.Name][other.Name] {
				continue
			}
			if reach["verify:"+svc.Name]["verify:"+other.Name] || reach["verify:"+svc.Name]["nix:core:"+other.Name] || reach["verify:"+svc.Name]["nix:service-config:"+other.Name] {
				t.Errorf("%s waits for %s, which it does not depend on", svc.Name, other.Name)
			}
		}
	}
}

// TestSeedExample checks the issue's own example on the seed's homelab.
func TestSeedExample(t *testing.T) {
	fixtures.NeedNix(t)
	g := fixtures.Load(t, filepath.Join(fixtures.Root(), "examples", "homelab.nix"))
	p, err := plan.New(g, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	step := find(t, p, "nix:service-config:vaultwarden")
	for _, want := range []string{"verify:postgresql", "verify:caddy", "verify:authentik", "tf:auth-core", "tf:infra"} {
		if !contains(step.Needs, want) {
			t.Errorf("nix:service-config:vaultwarden needs %v, missing %s", step.Needs, want)
		}
	}
	// No step waits for a whole phase: vaultwarden does not wait for dns.
	for _, n := range step.Needs {
		if strings.HasSuffix(n, ":dns") || strings.Contains(n, "nextcloud") {
			t.Errorf("nix:service-config:vaultwarden needs %s", n)
		}
	}
	if got := find(t, p, "tf:auth-core").Needs; strings.Join(got, ",") != "verify:authentik" {
		t.Errorf("tf:auth-core needs %v", got)
	}
}

func TestSelectService(t *testing.T) {
	fixtures.NeedNix(t)
	g := fixtures.Load(t, filepath.Join(fixtures.Root(), "examples", "homelab.nix"))
	p, err := plan.New(g, plan.Options{Services: []string{"vaultwarden"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Services, " "); got != "caddy postgresql authentik vaultwarden" {
		t.Errorf("services = %s", got)
	}
	for _, s := range p.Steps {
		if s.Service == "dns" || s.Service == "nextcloud" {
			t.Errorf("step %s kept", s.ID)
		}
	}
	_, err = plan.New(g, plan.Options{Services: []string{"vaultwarde"}})
	var se *plan.SelectionError
	if !errors.As(err, &se) || se.Error() != `unknown service "vaultwarde"; did you mean "vaultwarden"?` {
		t.Errorf("error = %v", err)
	}
}

// TestOptionalSteps covers the steps that only some services have:
// tf:service-infra (terraform modules), tf:service-config (config_modules),
// a core service that uses the auth provider, and outposts.
func TestOptionalSteps(t *testing.T) {
	m, err := manifest.Parse([]byte(`{
		"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24",
			"outposts": {"ldap": {"base_dn": "dc=x"}}},
		"core_services": {
			"authentik": {"ip": "10.0.0.5", "hostname": "authentik.x"},
			"grafana": {"ip": "10.0.0.6", "hostname": "grafana.x",
				"interface": {"auth": {"type": "oidc", "oidc": {"redirect_uris": ["https://grafana.x/cb"]}}}}},
		"services": {
			"plain": {"ip": "10.0.0.10", "hostname": "plain.x"},
			"full": {"ip": "10.0.0.11", "hostname": "full.x", "depends_on": ["plain"],
				"interface": {"terraform": {"modules": ["./a"], "config_modules": ["./b"]}}}}}`), manifest.FormatJSON, "o.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := graph.New(m)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(g, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Steps {
		got = append(got, s.ID+" <- "+strings.Join(s.Needs, ","))
	}
	want := []string{
		"tf:infra <- ",
		"nix:core:authentik <- tf:infra",
		"verify:authentik <- nix:core:authentik",
		"tf:auth-core <- verify:authentik",
		"nix:core:grafana <- tf:auth-core,tf:infra,verify:authentik",
		"verify:grafana <- nix:core:grafana",
		"nix:service-config:plain <- tf:infra",
		"verify:plain <- nix:service-config:plain",
		"tf:service-infra:full <- tf:infra,verify:plain",
		"nix:service-config:full <- tf:infra,tf:service-infra:full,verify:plain",
		"tf:service-config:full <- nix:service-config:full",
		"verify:full <- tf:service-config:full",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func find(t *testing.T, p *plan.Plan, id string) plan.Step {
	t.Helper()
	for _, s := range p.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("no step %s", id)
	return plan.Step{}
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

// TestOutpostRunnerAfterAuthCore: the service that runs the LDAP and
// RADIUS outposts (examples/sso.nix: directory, which uses no auth
// otherwise) is deployed after tf:auth-core, which makes the outposts'
// tokens it is built with; selecting it alone brings in the auth provider.
func TestOutpostRunnerAfterAuthCore(t *testing.T) {
	fixtures.NeedNix(t)
	g := fixtures.Load(t, filepath.Join(fixtures.Root(), "examples", "sso.nix"))
	p, err := plan.New(g, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if step := find(t, p, "nix:service-config:directory"); !contains(step.Needs, "tf:auth-core") {
		t.Errorf("nix:service-config:directory needs %v, want tf:auth-core among them", step.Needs)
	}
	p, err = plan.New(g, plan.Options{Services: []string{"directory"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Services, "authentik") {
		t.Errorf("selecting directory deploys %v, want the auth provider too", p.Services)
	}
}
