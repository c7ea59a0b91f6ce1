package rollout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/server/rollout"
)

// synthetic returns a 200-step DAG: each step lasts 5-20 ms and needs up
// to three earlier steps; and its critical path (the longest chain).
func synthetic() ([]rollout.Step, map[string]time.Duration, time.Duration) {
	rng := rand.New(rand.NewPCG(7, 7))
	var plan []rollout.Step
	dur := map[string]time.Duration{}
	finish := map[string]time.Duration{}
	var critical time.Duration
	for i := range 200 {
		id := fmt.Sprintf("s%03d", i)
		st := rollout.Step{ID: id}
		seen := map[string]bool{}
		for k := 0; k < 3 && i > 0; k++ {
			if n := fmt.Sprintf("s%03d", rng.IntN(i)); !seen[n] && rng.IntN(3) > 0 {
				seen[n] = true
				st.Needs = append(st.Needs, n)
			}
		}
		dur[id] = time.Duration(5+rng.IntN(16)) * time.Millisecond
		start := time.Duration(0)
		for _, n := range st.Needs {
			start = max(start, finish[n])
		}
		finish[id] = start + dur[id]
		critical = max(critical, finish[id])
		plan = append(plan, st)
	}
	return plan, dur, critical
}

// BenchmarkMakespan runs the synthetic DAG, each step sleeping for its
// duration (the workload, not synchronisation), and reports the makespan
// against the critical path (target: ratio <= 1.05, plus 0.2 s), and the
// same DAG under `make -j`.
func BenchmarkMakespan(b *testing.B) {
	plan, dur, critical := synthetic()
	var makespan time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer() // a new store per run is setup, not the executor's work
		s := newStore(b)
		o := rollout.Options{RolloutID: "bench", Store: s, Parallel: 64}
		b.StartTimer()
		runs++
		start := time.Now()
		res, err := rollout.Execute(context.Background(), plan, func(ctx context.Context, st rollout.Step, _ int) error {
			time.Sleep(dur[st.ID])
			return nil
		}, o)
		makespan += time.Since(start)
		if err != nil || !res.OK {
			b.Fatal(res, err)
		}
	}
	makespan /= time.Duration(runs)
	b.ReportMetric(float64(makespan.Milliseconds()), "makespan-ms")
	b.ReportMetric(float64(critical.Milliseconds()), "critical-path-ms")
	b.ReportMetric(float64(makespan)/float64(critical), "ratio")

	// The same DAG under make -j, for comparison: outside the timed loop.
	if _, err := exec.LookPath("make"); err != nil {
		return
	}
	dir := b.TempDir()
	var mk strings.Builder
	mk.WriteString("all:")
	for _, st := range plan {
		mk.WriteString(" " + st.ID)
	}
	mk.WriteString("\n")
	for _, st := range plan {
		fmt.Fprintf(&mk, "%s: %s\n\t@sleep %.3f\n", st.ID, strings.Join(st.Needs, " "), dur[st.ID].Seconds())
	}
	mk.WriteString(".PHONY: all " + strings.Join(func() []string {
		ids := []string{}
		for _, st := range plan {
			ids = append(ids, st.ID)
		}
		return ids
	}(), " ") + "\n")
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("make", "-s", "-j64", "-C", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("make: %v\n%s", err, out)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "make-j-ms")
}
