package plan_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/synth"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/plan"
)

var sizes = []int{100, 1000, 10000}

// pipeline is what `nixmox-cli plan` does with the manifest's JSON.
func pipeline(tb testing.TB, src string) *plan.Plan {
	m, err := manifest.ParseString(src, manifest.FormatJSON, "synth.json")
	if err != nil {
		tb.Fatal(err)
	}
	return planOf(tb, m)
}

func planOf(tb testing.TB, m *manifest.Manifest) *plan.Plan {
	g, err := graph.New(m)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := plan.New(g, plan.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkPlanJSON measures load + validate + graph + plan of generated
// JSON manifests (target: 10,000 services in under 1 s and 200 MB
// allocated).
func BenchmarkPlanJSON(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			f := filepath.Join(b.TempDir(), "m.json")
			if err := os.WriteFile(f, synth.JSON(n), 0o644); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m, err := manifest.Loader{}.Load(context.Background(), f)
				if err != nil {
					b.Fatal(err)
				}
				if p := planOf(b, m); len(p.Services) != n {
					b.Fatalf("planned %d services", len(p.Services))
				}
			}
		})
	}
}

// BenchmarkPlanNix measures the same for .nix manifests, and reports Nix's
// evaluation time and nixmox's own time separately (target: own time under
// 20% of Nix's).
func BenchmarkPlanNix(b *testing.B) {
	fixtures.NeedNix(b)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			f := filepath.Join(b.TempDir(), "m.nix")
			if err := os.WriteFile(f, synth.Nix(n), 0o644); err != nil {
				b.Fatal(err)
			}
			var evalTime, ownTime time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				data, err := nix.Runner{}.EvalJSON(context.Background(), f)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if p := pipeline(b, data); len(p.Services) != n {
					b.Fatalf("planned %d services", len(p.Services))
				}
				evalTime += t1.Sub(t0)
				ownTime += time.Since(t1)
			}
			b.ReportMetric(float64(evalTime.Milliseconds())/float64(b.N), "nix-ms/op")
			b.ReportMetric(float64(ownTime.Microseconds())/1000/float64(b.N), "own-ms/op")
			b.ReportMetric(100*float64(ownTime)/float64(evalTime), "own/nix-%")
		})
	}
}

// TestSyntheticManifestsPlan keeps the benchmark's inputs honest: the
// generated manifests are valid and their plans keep the contract.
func TestSyntheticManifestsPlan(t *testing.T) {
	for _, n := range []int{5, 100, 2000} {
		p := pipeline(t, string(synth.JSON(n)))
		if len(p.Services) != n || len(p.Steps) != 10+2*(n-4) {
			t.Errorf("n=%d: %d services, %d steps", n, len(p.Services), len(p.Steps))
		}
	}
}
