package render_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nixmox/nixmox/internal/synth"
	"github.com/nixmox/nixmox/pkg/render"
)

// BenchmarkGenerate measures rendering and writing the whole tree (target:
// 1,000 services in under 1 s).
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			g, err := manifestFromJSON(string(synth.JSON(n)))
			if err != nil {
				b.Fatal(err)
			}
			out := filepath.Join(b.TempDir(), "out")
			b.ReportAllocs()
			b.ResetTimer()
			files := 0
			for i := 0; i < b.N; i++ {
				tree, err := render.Render(g, render.Options{OutDir: out})
				if err != nil {
					b.Fatal(err)
				}
				if err := render.Write(out, tree); err != nil {
					b.Fatal(err)
				}
				files = len(tree)
			}
			b.ReportMetric(float64(files), "files")
		})
	}
}
