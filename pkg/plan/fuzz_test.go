package plan_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/synth"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
)

// fuzzPipeline runs the whole offline pipeline on arbitrary input. It must
// never panic; a manifest that validates must plan, and its plan must keep
// the contract (every step after all it needs) and render in every format.
func fuzzPipeline(t *testing.T, data []byte, format manifest.Format) {
	m, err := manifest.Parse(data, format, "fuzz")
	if m == nil {
		return
	}
	g, gerr := graph.New(m)
	if manifest.Join("fuzz", err, gerr) != nil {
		return
	}
	p, err := plan.New(g, plan.Options{})
	if err != nil {
		t.Fatalf("a valid manifest did not plan: %v", err)
	}
	seen := map[string]bool{}
	for _, s := range p.Steps {
		for _, n := range s.Needs {
			if !seen[n] {
				t.Fatalf("step %s listed before %s, which it needs", s.ID, n)
			}
		}
		seen[s.ID] = true
	}
	for _, f := range plan.Formats {
		if err := p.WriteFormat(discard{}, f); err != nil {
			t.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func FuzzLoadJSON(f *testing.F) {
	base, err := os.ReadFile(filepath.Join(fixtures.Root(), "pkg", "manifest", "testdata", "base.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base)
	f.Add(synth.JSON(8))
	f.Add([]byte(`{"services": {"a": {"depends_on": ["a"]}}}`))
	f.Add([]byte(`{"core_services": {"x": {"interface": {"proxy": {"r": {"domain": "a"}}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzPipeline(t, data, manifest.FormatJSON) })
}

func FuzzLoadYAML(f *testing.F) {
	for _, name := range []string{"homelab.yaml"} {
		data, err := os.ReadFile(filepath.Join(fixtures.Root(), "examples", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [1, 2]\nb: *a\n"))
	f.Add([]byte("services:\n  a:\n    depends_on: [b]\n  b:\n    depends_on: [a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzPipeline(t, data, manifest.FormatYAML) })
}
