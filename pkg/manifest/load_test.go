package manifest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/nixmox/nixmox/internal/fixtures"
	. "github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
)

func TestFixturesLoad(t *testing.T) {
	fixtures.NeedNix(t)
	for _, f := range fixtures.Manifests(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			m, err := Loader{}.Load(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Enabled()) < 3 {
				t.Fatalf("only %d enabled services", len(m.Enabled()))
			}
		})
	}
}

// TestFixturesMatchSchema validates every fixture, as Nix evaluates it,
// against the exported JSON Schema with an independent validator, so the
// schema and the decoder cannot drift apart.
func TestFixturesMatchSchema(t *testing.T) {
	fixtures.NeedNix(t)
	raw, err := JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("manifest.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixtures.Manifests(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data := asJSON(t, f)
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if err := schema.Validate(inst); err != nil {
				t.Fatal(err)
			}
		})
	}
	// And the schema must reject what the decoder rejects.
	bad := []string{
		`{"network": {"domian": "x"}}`,
		`{"services": {"a": {"ip": 1}}}`,
		`{"services": {"a": {"interface": {"auth": {"type": "oauth"}}}}}`,
		`{"services": {"a": {"interface": {"proxy": {"domain": "x", "r": {"domain": "y"}}}}}}`,
		`{"services": {"Bad_Name": {}}}`,
	}
	for _, b := range bad {
		inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(b))
		if schema.Validate(inst) == nil {
			t.Errorf("schema accepts %s", b)
		}
	}
}

// asJSON returns a fixture as the JSON the decoder reads.
func asJSON(t *testing.T, f string) []byte {
	switch filepath.Ext(f) {
	case ".nix":
		out, err := nix.Runner{}.EvalJSON(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(out)
	case ".yaml", ".yml":
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(src, &v); err != nil {
			t.Fatal(err)
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDefaults(t *testing.T) {
	m, err := Parse([]byte(`{
		"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
		"core_services": {"caddy": {"ip": "10.0.0.3", "hostname": "caddy.x"}},
		"services": {"app": {"ip": "10.0.0.4", "hostname": "app.x",
			"interface": {"proxy": {"domain": "app.x", "upstream": "localhost:80"}, "health": {"liveness": "true"}}}}
	}`), FormatJSON, "d.json")
	if err != nil {
		t.Fatal(err)
	}
	app := m.Service("app")
	r := app.Interface.Proxy.Routes[0]
	h := app.Interface.Health
	checks := []struct {
		name      string
		got, want any
	}{
		{"enable", app.Enable, true},
		{"onboot", app.OnBoot, true},
		{"start", app.Start, true},
		{"resources.cores", app.Resources.Cores, 1},
		{"resources.memory", app.Resources.Memory, 512},
		{"resources.disk_gb", app.Resources.DiskGB, 8},
		{"proxy.path", r.Path, "/"},
		{"proxy.tls", r.TLS, true},
		{"proxy.authz", r.Authz, false},
		{"health.interval", h.Interval, 30},
		{"health.timeout", h.Timeout, 60},
		{"health.retries", h.Retries, 3},
		{"network.bridge", m.Network.Bridge, "vmbr0"},
		{"network.reverse_proxy", m.Network.ReverseProxy, "caddy"},
		{"health_check_timeout", m.HealthCheckTimeout, 600},
		{"retry_attempts", m.RetryAttempts, 3},
		{"retry_delay", m.RetryDelay, 10},
		{"enable_rollback", m.EnableRollback, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s defaults to %v, want %v", c.name, c.got, c.want)
		}
	}
	if deps := app.Dependencies(); len(deps) != 1 || deps[0].Service != "caddy" || !deps[0].Has("reverse proxy") {
		t.Errorf("app's dependencies = %v, want caddy (reverse proxy)", deps)
	}
}

func TestProxyForms(t *testing.T) {
	for _, tc := range []struct {
		proxy string
		named bool
		names []string
	}{
		{`{"domain": "a.x", "upstream": "localhost:1"}`, false, []string{""}},
		{`{"b": {"domain": "b.x", "upstream": "localhost:1"}, "a": {"domain": "a.x", "upstream": "localhost:2"}}`, true, []string{"a", "b"}},
	} {
		m, err := Parse([]byte(`{
			"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
			"core_services": {"caddy": {"ip": "10.0.0.3", "hostname": "caddy.x", "interface": {"proxy": `+tc.proxy+`}}}}`), FormatJSON, "p.json")
		if err != nil {
			t.Fatal(err)
		}
		px := m.Service("caddy").Interface.Proxy
		var names []string
		for _, r := range px.Routes {
			names = append(names, r.Name)
			if r.Path != "/" || !r.TLS {
				t.Errorf("route %q did not get its defaults: %+v", r.Name, r)
			}
		}
		if px.Named != tc.named || strings.Join(names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("%s: named=%v routes=%q, want named=%v routes=%q", tc.proxy, px.Named, names, tc.named, tc.names)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		format     Format
		want       string
	}{
		{"JSON duplicate key", `{"network": {}, "network": {}}`, FormatJSON, `x.json: invalid JSON at line 1, column 17: duplicate key "network"`},
		{"JSON duplicate service", "{\"services\": {\"a\": {},\n  \"a\": {}}}", FormatJSON, `x.json: invalid JSON at line 2, column 3: duplicate key "a"`},
		{"JSON duplicate field in a service", "{\"services\": {\"b\": {}, \"a\": {\"ip\": \"x\",\n \"ip\": \"y\"}}}", FormatJSON, `x.json: invalid JSON at line 2, column 2: duplicate key "ip"`},
		{"JSON duplicate unknown field", `{"x": 1, "x": 2}`, FormatJSON, `x.json: invalid JSON at line 1, column 10: duplicate key "x"`},
		{"JSON duplicate map key", `{"network": {"ssh_keys": {"root": [], "root": []}}}`, FormatJSON, `x.json: invalid JSON at line 1, column 39: duplicate key "root"`},
		{"JSON duplicate named route", `{"services": {"a": {"interface": {"proxy": {"r": {}, "r": {}}}}}}`, FormatJSON, `x.json: invalid JSON at line 1, column 54: duplicate key "r"`},
		{"JSON duplicate variable", `{"services": {"a": {"interface": {"terraform": {"variables": {"v": {"k": 1, "k": 2}}}}}}}`, FormatJSON, `x.json: invalid JSON at line 1, column 77: duplicate key "k"`},
		{"JSON trailing data", "{}\n{}", FormatJSON, `x.json: invalid JSON at line 2, column 1: unexpected data after the manifest`},
		{"JSON syntax", "{\n  \"a\": }", FormatJSON, `x.json: invalid JSON at line 2, column 8: invalid character '}' at start of value (at /a)`},
		{"YAML duplicate key", "network: {}\nnetwork: {}\n", FormatYAML, `x.json: line 2: duplicate key "network"`},
		{"YAML merge key", "base: &b {ip: x}\nservices:\n  a:\n    <<: *b\n", FormatYAML, `x.json: line 4: YAML merge keys (<<) are not supported`},
		{"YAML empty", "", FormatYAML, `x.json: the manifest is empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data), tc.format, "x.json")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant prefix %q", err, tc.want)
			}
		})
	}
}

// TestYAMLAliasBomb checks that aliases cannot expand a small file into an
// enormous tree.
func TestYAMLAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		prev := "*a" + string(rune('0'+i-1))
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [" + strings.Repeat(prev+", ", 9) + prev + "]\n")
	}
	_, err := Parse([]byte(b.String()), FormatYAML, "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), "too many values") {
		t.Fatalf("error = %v, want a refusal to expand", err)
	}
}

func TestNixEvalError(t *testing.T) {
	fixtures.NeedNix(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "broken.nix")
	if err := os.WriteFile(f, []byte("{\n  network = {\n    gateway = undefinedThing;\n  };\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Loader{}.Load(context.Background(), f)
	var ee *nix.EvalError
	if !errors.As(err, &ee) {
		t.Fatalf("error = %v, want a nix.EvalError", err)
	}
	if !strings.Contains(err.Error(), "undefined variable 'undefinedThing'") || !strings.Contains(err.Error(), "broken.nix:3:") {
		t.Fatalf("error does not carry Nix's message and position:\n%v", err)
	}
}

func TestNixMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Loader{}.Load(context.Background(), "../../examples/minimal.nix")
	if !errors.Is(err, nix.ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install nix-bin") {
		t.Fatalf("error = %v, want the install hint", err)
	}
}

func TestUnknownExtension(t *testing.T) {
	_, err := Loader{}.Load(context.Background(), "manifest.toml")
	if err == nil || !strings.Contains(err.Error(), `unknown manifest format ".toml"`) {
		t.Fatalf("error = %v", err)
	}
}

func TestJSONRoundTripOfVariables(t *testing.T) {
	m, err := Parse([]byte(`{
		"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
		"core_services": {"dns": {"ip": "10.0.0.2", "hostname": "dns.x",
			"interface": {"terraform": {"modules": ["./tf"], "variables": {"n": 12345678901234567890, "l": [1, "a", {"b": null}]}}}}}}`), FormatJSON, "v.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(m.Service("dns").Interface.Terraform.Variables)
	if err != nil {
		t.Fatal(err)
	}
	// Big numbers must reach Terraform exactly, not through float64.
	if want := `{"l":[1,"a",{"b":null}],"n":12345678901234567890}`; string(out) != want {
		t.Fatalf("variables = %s, want %s", out, want)
	}
}

// TestStringsDecodeLikeEncodingJSON checks the decoder's strings — values,
// service names, named routes and map keys, with and without escapes, at
// the top level and inside services (which are decoded separately) —
// against encoding/json's reading of the same literals.
func TestStringsDecodeLikeEncodingJSON(t *testing.T) {
	for _, lit := range []string{`""`, `"plain"`, `"caf\u00e9"`, `"café"`, `"a\"b\\c"`, `"tab\there"`, `"\ud83d\ude00 x"`, `"/"`, `"\/x"`} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatal(err)
		}
		m, _ := Parse([]byte(`{
			"network": {"domain": `+lit+`, "ssh_keys": {`+lit+`: []}},
			"services": {"s": {"version": `+lit+`, "tags": [`+lit+`],
				"interface": {"proxy": {`+lit+`: {"path": `+lit+`}}, "terraform": {"variables": {`+lit+`: `+lit+`}}}}}}`), FormatJSON, "s.json")
		if m == nil {
			t.Fatalf("%s: not decoded", lit)
		}
		s := m.Services["s"]
		_, key := m.Network.SSHKeys[want]
		got := []any{m.Network.Domain, key, s.Version, s.Tags[0], s.Interface.Proxy.Routes[0].Name, s.Interface.Proxy.Routes[0].Path, s.Interface.Terraform.Variables[want]}
		if fmt.Sprint(got) != fmt.Sprint([]any{want, true, want, want, want, want, want}) {
			t.Errorf("%s: decoded %q, want %q everywhere", lit, got, want)
		}
	}
}
