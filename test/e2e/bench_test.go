package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/testenv"
)

// evalLab is a server (provider none) with n services, each its own closure
// file (a derivation of the nixmox argument, no bin/activate: switching is
// setting the profile).
type evalLab struct {
	dir, socket, manifest string
	files                 []string
	srv                   *proc
}

func newEvalLab(b *testing.B, n int, agents bool) *evalLab {
	testenv.RequireTool(b, "nix-build", "terraform")
	l := &evalLab{dir: b.TempDir()}
	l.socket = filepath.Join(l.dir, "control.sock")
	var members []string
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		f := filepath.Join(l.dir, name+".nix")
		src := fmt.Sprintf(`{ nixmox ? "{}" }: derivation { name = "nixmox-bench-%s"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \"$arg\" > $out" ]; arg = nixmox; }`, name)
		if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
			b.Fatal(err)
		}
		l.files = append(l.files, f)
		members = append(members, fmt.Sprintf(`"%s": {"ip": "10.9.%d.%d", "hostname": "%s.lab.test", "closure": "%s.nix",
  "interface": {"health": {"liveness": "true", "interval": 1, "timeout": 30}}}`, name, 1+i/250, 1+i%250, name, name))
	}
	l.manifest = filepath.Join(l.dir, "m.json")
	m := `{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/16"}, "health_check_timeout": 120,
  "services": {` + strings.Join(members, ",\n") + `}}`
	if err := os.WriteFile(l.manifest, []byte(m), 0o644); err != nil {
		b.Fatal(err)
	}
	l.srv = run(b, "nixmox-server", "serve", "--state-dir", filepath.Join(l.dir, "server"), "--listen", "127.0.0.1:0", "--socket", l.socket)
	line, _ := l.srv.await(b, 0, `serving: agents=`)
	addr := strings.Fields(line[strings.Index(line, "agents=")+len("agents="):])[0]
	if agents {
		for i := range n {
			startAgent(b, l.srv, l.dir, l.socket, addr, fmt.Sprintf("s%d", i), 0)
		}
	}
	return l
}

func (l *evalLab) apply(b *testing.B, args ...string) string {
	b.Helper()
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), append([]string{"apply", "-f", l.manifest, "--socket", l.socket}, args...)...).CombinedOutput()
	if err != nil {
		b.Fatalf("apply %v: %v\n%s\nserver:\n%s", args, err, out, l.srv.log())
	}
	return string(out)
}

// bare is one nix-instantiate of the same closures: what evaluating them
// costs Nix alone, the floor of an unchanged apply.
func (l *evalLab) bare(b *testing.B) time.Duration {
	b.Helper()
	best := time.Duration(1<<63 - 1)
	for range 3 {
		start := time.Now()
		cmd := exec.Command("nix-instantiate", append(l.files, "--argstr", "nixmox", "{}")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("nix-instantiate: %v\n%s", err, out)
		}
		best = min(best, time.Since(start))
	}
	return best
}

// BenchmarkUnchangedApply: `nixmox-cli apply` of a manifest that did not
// change, for 10, 30 and 100 services with real agents (provider none),
// against one bare nix-instantiate of the same closures (bare-ms); the
// target is ratio × bare + 0.3 s or less with ratio ≤ 1.3, reported as
// over-bare-ms (the apply minus 1.3 × bare).
func BenchmarkUnchangedApply(b *testing.B) {
	for _, n := range []int{10, 30, 100} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			l := newEvalLab(b, n, true)
			l.apply(b)
			bare := l.bare(b)
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				if out := l.apply(b); !strings.Contains(out, fmt.Sprintf("%d unchanged", 2*n+1)) {
					b.Fatalf("not unchanged:\n%s", out)
				}
				total += time.Since(start)
			}
			per := total / time.Duration(b.N)
			b.ReportMetric(float64(bare.Microseconds())/1000, "bare-ms")
			b.ReportMetric(float64(per)/float64(bare), "ratio")
			b.ReportMetric(float64((per-bare*13/10).Microseconds())/1000, "over-bare-ms")
		})
	}
}

// BenchmarkDryRun1000: `nixmox-cli apply --dry-run` of 1,000 services that
// were never deployed (target: under 15 s), against one bare
// nix-instantiate of their closures.
func BenchmarkDryRun1000(b *testing.B) {
	l := newEvalLab(b, 1000, false)
	bare := l.bare(b)
	for b.Loop() {
		l.apply(b, "--dry-run")
	}
	b.ReportMetric(float64(bare.Microseconds())/1000, "bare-ms")
}
