package render_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/pkg/render"
)

// Hostile values for every place where the manifest allows free text that
// reaches a generated file. Each test below reads the generated file back
// with the program that will consume it and checks that the value arrived
// as data, unchanged, and that nothing else changed meaning.
var (
	hostileVars = map[string]any{
		"evil":   `${file("/etc/passwd")}`,
		"tmpl":   `%{ if true }x%{ endif }`,
		"shell":  "$(touch /tmp/pwned) `id` ; rm -rf / # ' \" \\",
		"nested": map[string]any{"k${x}": []any{"}{", "line\nbreak", `a"b`, "$${already}"}},
	}
	hostileHeaders = map[string]string{
		"X-Quote":       `a"b } respond "pwned" 200 {`,
		"X-Placeholder": `{env.HOME} {http.request.uri}`,
		"X-Tick":        "back`tick and \"quote\"",
		"X-Shell":       "$(id) ; `id`",
	}
	hostileCommand = `printf '%s|' "it's" "\"q\"" '$(id)' '` + "`id`" + `' "$HOME" '}{'`
)

func hostileManifest(t *testing.T, moduleDir string) string {
	t.Helper()
	vars, _ := json.Marshal(hostileVars)
	headers, _ := json.Marshal(hostileHeaders)
	cmd, _ := json.Marshal(hostileCommand)
	mod, _ := json.Marshal(moduleDir)
	return `{
		"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
		"core_services": {"caddy": {"ip": "10.0.0.3", "hostname": "caddy.lab.test"}},
		"services": {"app": {"ip": "10.0.0.4", "hostname": "app.lab.test",
			"interface": {
				"terraform": {"modules": [` + string(mod) + `], "variables": ` + string(vars) + `},
				"proxy": {"domain": "app.lab.test", "upstream": "localhost:8080", "headers": ` + string(headers) + `},
				"health": {"liveness": ` + string(cmd) + `, "interval": 1, "retries": 0}}}}}`
}

// TestInjectionTerraform applies the generated root module with real
// Terraform (terraform_data only: no provider) and reads the values the
// module received from the state: exactly the manifest's, with no
// interpolation, template or shell evaluated. The module directory's own
// name is hostile too.
func TestInjectionTerraform(t *testing.T) {
	need(t, "terraform")
	base := t.TempDir()
	modName := "mod $(id) `x` ${y} ;z"
	modDir := filepath.Join(base, modName)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		t.Fatal(err)
	}
	module := `
variable "nixmox" { type = any }
variable "evil" { type = any }
variable "tmpl" { type = any }
variable "shell" { type = any }
variable "nested" { type = any }
resource "terraform_data" "echo" {
  input = { evil = var.evil, tmpl = var.tmpl, shell = var.shell, nested = var.nested }
}
`
	if err := os.WriteFile(filepath.Join(modDir, "main.tf"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := manifestFromJSON(hostileManifest(t, "./"+modName))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(base, "out")
	tree, err := render.Render(g, render.Options{ManifestDir: base, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if err := render.Write(out, tree); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(out, "terraform", "services", "app")
	terraform(t, root, "init", "-backend=false", "-input=false", "-no-color")
	terraform(t, root, "apply", "-auto-approve", "-input=false", "-no-color")
	var state struct {
		Values struct {
			Root struct {
				Children []struct {
					Resources []struct {
						Values struct {
							Output map[string]any `json:"output"`
						} `json:"values"`
					} `json:"resources"`
				} `json:"child_modules"`
			} `json:"root_module"`
		} `json:"values"`
	}
	if err := json.Unmarshal([]byte(terraform(t, root, "show", "-json", "-no-color")), &state); err != nil {
		t.Fatal(err)
	}
	ch := state.Values.Root.Children
	if len(ch) != 1 || len(ch[0].Resources) != 1 {
		t.Fatalf("unexpected state: %+v", state)
	}
	if got := ch[0].Resources[0].Values.Output; !reflect.DeepEqual(got, hostileVars) {
		t.Errorf("the module received\n%#v\nwant\n%#v", got, hostileVars)
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("a command in a variable ran")
	}
}

// TestInjectionCaddy adapts the generated Caddyfile to Caddy's JSON and
// checks that each header arrives with exactly its value, and that no
// handler but the expected ones exists.
func TestInjectionCaddy(t *testing.T) {
	need(t, "caddy")
	g, err := manifestFromJSON(hostileManifest(t, "./m"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := render.Render(g, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeTree(t, tree)
	t.Setenv("HOME", t.TempDir())
	adapted := run(t, dir, "caddy", "adapt", "--adapter", "caddyfile", "--config", "caddy/Caddyfile")
	var cfg any
	if err := json.Unmarshal([]byte(adapted[strings.Index(adapted, "{"):]), &cfg); err != nil {
		t.Fatalf("%v\n%s", err, adapted)
	}
	got := map[string]string{}
	var handlers []string
	walk(cfg, func(m map[string]any) {
		if h, ok := m["handler"].(string); ok {
			handlers = append(handlers, h)
		}
		if set, ok := m["set"].(map[string]any); ok {
			for k, v := range set {
				if vs, ok := v.([]any); ok && len(vs) == 1 {
					// Caddy unescapes \{ \} when it replaces placeholders.
					got[k] = strings.NewReplacer(`\{`, "{", `\}`, "}").Replace(vs[0].(string))
				}
			}
		}
	})
	if !reflect.DeepEqual(got, hostileHeaders) {
		t.Errorf("headers:\n got %q\nwant %q", got, hostileHeaders)
	}
	for _, h := range handlers {
		if h == "static_response" {
			t.Errorf("a header value became a directive: handlers %v", handlers)
		}
	}
}

func walk(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v)
		for _, e := range v {
			walk(e, fn)
		}
	case []any:
		for _, e := range v {
			walk(e, fn)
		}
	}
}

// TestInjectionHealthScript runs the hostile liveness command through the
// generated script and directly with sh -c: the outputs must match.
func TestInjectionHealthScript(t *testing.T) {
	need(t, "sh", "timeout")
	g, err := manifestFromJSON(hostileManifest(t, "./m"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := render.Render(g, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeTree(t, tree)
	viaScript := run(t, dir, "sh", "health/app.sh", "liveness")
	direct, err := exec.Command("sh", "-c", hostileCommand).Output()
	if err != nil {
		t.Fatal(err)
	}
	if viaScript != string(direct) {
		t.Errorf("via the script: %q\ndirectly:      %q", viaScript, direct)
	}
	// And the host facts carry the command as data.
	var facts render.HostFacts
	if err := json.Unmarshal(tree["hosts/app.json"], &facts); err != nil {
		t.Fatal(err)
	}
	if facts.Health.Liveness != hostileCommand {
		t.Errorf("hosts/app.json liveness = %q", facts.Health.Liveness)
	}
}
