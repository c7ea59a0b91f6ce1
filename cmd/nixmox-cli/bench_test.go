package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/synth"
)

// BenchmarkCLIPlanNix runs the real nixmox-cli, a process of its own, on
// generated .nix manifests: `nixmox-cli plan -f m.nix --format json`. Nix's
// evaluation time is what the CLI itself measured around nix-instantiate
// (its debug log); own time is the rest of the process's wall time —
// starting up, decoding, validating, planning and writing the plan. The
// in-process figures are BenchmarkPlanNix in pkg/plan.
func BenchmarkCLIPlanNix(b *testing.B) {
	fixtures.NeedNix(b)
	cli := buildCLI(b)
	evaluated := regexp.MustCompile(`manifest evaluated by nix: .* duration=(\S+)`)
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			f := filepath.Join(b.TempDir(), "m.nix")
			if err := os.WriteFile(f, synth.Nix(n), 0o644); err != nil {
				b.Fatal(err)
			}
			var evalTime, ownTime time.Duration
			for b.Loop() {
				var stderr bytes.Buffer
				cmd := exec.Command(cli, "--log-level", "debug", "plan", "-f", f, "--format", "json")
				cmd.Stderr = &stderr
				start := time.Now()
				if err := cmd.Run(); err != nil {
					b.Fatalf("%v: %s", err, stderr.Bytes())
				}
				wall := time.Since(start)
				m := evaluated.FindSubmatch(stderr.Bytes())
				if m == nil {
					b.Fatalf("no evaluation time in the log:\n%s", stderr.Bytes())
				}
				eval, err := time.ParseDuration(string(m[1]))
				if err != nil {
					b.Fatal(err)
				}
				evalTime += eval
				ownTime += wall - eval
			}
			b.ReportMetric(float64(evalTime.Microseconds())/1000/float64(b.N), "nix-ms/op")
			b.ReportMetric(float64(ownTime.Microseconds())/1000/float64(b.N), "own-ms/op")
			b.ReportMetric(100*float64(ownTime)/float64(evalTime), "own/nix-%")
		})
	}
}

// buildCLI builds nixmox-cli as `make bin` does.
func buildCLI(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "nixmox-cli")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
