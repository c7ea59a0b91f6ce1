package render_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/internal/tfcheck"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/render"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// fixture is one manifest and its rendered tree.
type fixture struct {
	name string
	file string
	g    *graph.Graph
	tree render.Tree
}

// renderAll renders every fixture as `generate -o out` would from this
// directory.
func renderAll(t *testing.T) []fixture {
	t.Helper()
	fixtures.NeedNix(t)
	var out []fixture
	for _, f := range fixtures.Manifests(t) {
		g := fixtures.Load(t, f)
		tree, err := render.Render(g, render.Options{ManifestDir: filepath.Dir(f), OutDir: "out"})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// examples/homelab.nix -> examples-homelab-nix; the shared fixtures
		// (../shared/manifests) -> shared-...
		origin := filepath.Base(filepath.Dir(f))
		if origin == "manifests" {
			origin = "shared"
		}
		name := origin + "-" + strings.ReplaceAll(filepath.Base(f), ".", "-")
		out = append(out, fixture{name, f, g, tree})
	}
	return out
}

// TestGolden compares every rendered file with testdata/golden/<fixture>/;
// `go test ./pkg/render -update` rewrites them.
func TestGolden(t *testing.T) {
	for _, fx := range renderAll(t) {
		t.Run(fx.name, func(t *testing.T) {
			// The embedded modules are copied byte for byte: compared with
			// the repository's terraform/modules, not kept as golden copies.
			golden := render.Tree{}
			for p, data := range fx.tree {
				rel, copied := strings.CutPrefix(p, "terraform/auth-core/")
				if copied && strings.HasPrefix(rel, "modules/") && !strings.HasPrefix(rel, "modules/user/") {
					orig, err := os.ReadFile(filepath.Join(fixtures.Root(), "terraform", rel))
					if err != nil || !bytes.Equal(orig, data) {
						t.Errorf("%s is not a copy of terraform/%s", p, rel)
					}
					continue
				}
				golden[p] = data
			}
			dir := filepath.Join("testdata", "golden", fx.name)
			if *update {
				if err := render.Write(dir, golden); err != nil {
					t.Fatal(err)
				}
				return
			}
			diff, err := render.Diff(dir, golden)
			if err != nil {
				t.Fatal(err)
			}
			if len(diff) > 0 {
				t.Errorf("golden files differ (go test ./pkg/render -update):\n  %s", strings.Join(diff, "\n  "))
			}
		})
	}
}

// TestDeterministic renders each manifest twice, from two loads, writes both
// and compares them byte for byte.
func TestDeterministic(t *testing.T) {
	for _, fx := range renderAll(t) {
		again, err := render.Render(fixtures.Load(t, fx.file), render.Options{ManifestDir: filepath.Dir(fx.file), OutDir: "out"})
		if err != nil {
			t.Fatal(err)
		}
		a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
		if err := render.Write(a, fx.tree); err != nil {
			t.Fatal(err)
		}
		if err := render.Write(b, again); err != nil {
			t.Fatal(err)
		}
		if len(fx.tree) < 5 {
			t.Errorf("%s: only %d files", fx.name, len(fx.tree))
		}
		for _, p := range fx.tree.Paths() {
			x, err1 := os.ReadFile(filepath.Join(a, p))
			y, err2 := os.ReadFile(filepath.Join(b, p))
			if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
				t.Errorf("%s: %s differs between two renders", fx.name, p)
			}
		}
		if len(again) != len(fx.tree) {
			t.Errorf("%s: %d files, then %d", fx.name, len(fx.tree), len(again))
		}
	}
}

// TestWriteReplacesAtomically: writing over an existing tree leaves exactly
// the new tree, and no temporary directory behind.
func TestWriteReplacesAtomically(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "gen")
	if err := render.Write(dir, render.Tree{"old/a.txt": []byte("old"), "keep.sh": []byte("#!/bin/sh\n")}); err != nil {
		t.Fatal(err)
	}
	if err := render.Write(dir, render.Tree{"new/b.txt": []byte("new"), "keep.sh": []byte("#!/bin/sh\necho\n")}); err != nil {
		t.Fatal(err)
	}
	diff, err := render.Diff(dir, render.Tree{"new/b.txt": []byte("new"), "keep.sh": []byte("#!/bin/sh\necho\n")})
	if err != nil || len(diff) != 0 {
		t.Fatalf("diff = %v, %v", diff, err)
	}
	st, err := os.Stat(filepath.Join(dir, "keep.sh"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("script mode = %v, %v", st.Mode(), err)
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

// TestTerraformAgainstProviderSchemas checks every Authentik resource and
// data source, in the generated roots and the embedded modules, against the
// real provider schema.
func TestTerraformAgainstProviderSchemas(t *testing.T) {
	schemaDir := filepath.Join(fixtures.Root(), "..", "shared", "schemas")
	files, _ := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	if len(files) == 0 {
		testenv.Missing(t, "needs ../shared/schemas beside the repository")
	}
	schemas, err := tfcheck.Load(files...)
	if err != nil {
		t.Fatal(err)
	}
	for _, fx := range renderAll(t) {
		tf := map[string][]byte{}
		for p, data := range fx.tree {
			if strings.HasPrefix(p, "terraform/") {
				tf[p] = data
			}
		}
		problems, checked := schemas.Check(tf)
		for _, p := range problems {
			t.Errorf("%s: %s", fx.name, p)
		}
		if _, ok := fx.tree["terraform/auth-core/main.tf.json"]; ok && checked < 10 {
			t.Errorf("%s: only %d resources and data sources checked", fx.name, checked)
		}
	}
	// The checker itself must catch what it is for.
	bad := map[string][]byte{"x.tf.json": []byte(`{"resource": {"authentik_application": {"a": {"name": ["not", "a", "string"], "slugg": "x"}}}}`)}
	if problems, _ := schemas.Check(bad); len(problems) != 3 {
		t.Errorf("checker found %d problems in a bad resource, want 3: %v", len(problems), problems)
	}
}

func manifestFromJSON(data string) (*graph.Graph, error) {
	m, err := manifest.Parse([]byte(data), manifest.FormatJSON, "test.json")
	if err != nil {
		return nil, err
	}
	return graph.New(m)
}

// TestModuleCallsMatchModules checks every call of an embedded module in
// the generated auth-core roots: each argument is a variable the module
// declares, and every variable without a default is given.
func TestModuleCallsMatchModules(t *testing.T) {
	calls := 0
	for _, fx := range renderAll(t) {
		root, ok := fx.tree["terraform/auth-core/main.tf.json"]
		if !ok {
			continue
		}
		var doc struct {
			Module map[string]map[string]any `json:"module"`
		}
		if err := json.Unmarshal(root, &doc); err != nil {
			t.Fatal(err)
		}
		for name, args := range doc.Module {
			src, _ := args["source"].(string)
			if !strings.HasPrefix(src, "./modules/") {
				continue // a user's module
			}
			calls++
			declared, required := moduleVariables(t, fx.tree["terraform/auth-core/"+strings.TrimPrefix(src, "./")+"/main.tf"])
			for arg := range args {
				if arg != "source" && arg != "depends_on" && !declared[arg] {
					t.Errorf("%s: module %s passes %q, which %s does not declare", fx.name, name, arg, src)
				}
			}
			for v := range required {
				if _, ok := args[v]; !ok {
					t.Errorf("%s: module %s does not set required variable %q of %s", fx.name, name, v, src)
				}
			}
		}
	}
	if calls == 0 {
		t.Error("no module call checked")
	}
}

func moduleVariables(t *testing.T, src []byte) (declared, required map[string]bool) {
	t.Helper()
	if src == nil {
		t.Fatal("module source not in the tree")
	}
	f, diags := hclsyntax.ParseConfig(src, "main.tf", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	declared, required = map[string]bool{}, map[string]bool{}
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		if b.Type == "variable" && len(b.Labels) == 1 {
			declared[b.Labels[0]] = true
			if _, hasDefault := b.Body.Attributes["default"]; !hasDefault {
				required[b.Labels[0]] = true
			}
		}
	}
	return declared, required
}

// TestModuleOutputsReexported: a service root re-exports every output of
// its modules, sensitive ones as sensitive; two modules with an output of
// the same name are refused, naming both.
func TestModuleOutputsReexported(t *testing.T) {
	dir := t.TempDir()
	write := func(mod, src string) {
		if err := os.MkdirAll(filepath.Join(dir, mod), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, mod, "main.tf"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("site", `variable "nixmox" {}
output "title" { value = "x" }
output "token" {
  value     = "y"
  sensitive = true
}`)
	write("other", `variable "nixmox" {}
output "title" { value = "z" }`)
	doc := func(mods string) (map[string]any, error) {
		g, err := manifestFromJSON(`{"network": {"dns_server": "10.1.0.2", "gateway": "10.1.0.1", "network_cidr": "10.1.0.0/24"},
  "services": {"app": {"ip": "10.1.0.5", "hostname": "app.lan", "interface": {"terraform": {"modules": ` + mods + `}}}}}`)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := render.Render(g, render.Options{ManifestDir: dir})
		if err != nil {
			return nil, err
		}
		var out map[string]any
		if err := json.Unmarshal(tree["terraform/services/app/main.tf.json"], &out); err != nil {
			t.Fatal(err)
		}
		return out, nil
	}
	got, err := doc(`["./site"]`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"title": map[string]any{"value": "${module.m0_site.title}"},
		"token": map[string]any{"value": "${module.m0_site.token}", "sensitive": true},
	}
	if g, _ := json.Marshal(got["output"]); string(g) != mustJSON(t, want) {
		t.Errorf("outputs = %s, want %s", g, mustJSON(t, want))
	}
	_, err = doc(`["./site", "./other"]`)
	if err == nil || !strings.Contains(err.Error(), `services.app.interface.terraform: modules ./site and ./other both have an output "title"`) {
		t.Errorf("error = %v, want the duplicate output named", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
