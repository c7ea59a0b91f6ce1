package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixmox/nixmox/agent"
	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/nix"
)

// generation builds, with real Nix, a closure whose bin/activate writes
// its label to state.
func generation(t *testing.T, label, state string) string {
	return agent.BuildGeneration(t, label, state)
}

type recorder struct {
	mu     sync.Mutex
	stages []string
}

func (r *recorder) report(gen int64, st agent.Stage, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stages = append(r.stages, fmt.Sprintf("%d:%s", gen, st))
}

func (r *recorder) take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.Join(r.stages, " ")
	r.stages = nil
	return s
}

func active(t *testing.T, state string) string {
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// TestSwitchCheckAndMagicRollback switches a real Nix profile between real
// closures: a healthy confirmed generation stays; an unhealthy one is rolled
// back and the previous one re-activated; a healthy one the server never
// confirms is rolled back when confirm_timeout expires.
func TestSwitchCheckAndMagicRollback(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "active")
	rec := &recorder{}
	expired := make(chan time.Time)
	var timeouts []time.Duration
	sw := &agent.Switcher{
		Profile: nix.Profile(filepath.Join(dir, "profiles", "system")),
		Report:  rec.report,
		After: func(d time.Duration) <-chan time.Time {
			timeouts = append(timeouts, d)
			return expired
		},
	}
	healthyIf := func(label string) health.Spec {
		return health.Spec{Liveness: fmt.Sprintf("grep -qx %s %s", label, state), Interval: time.Second, Timeout: 10 * time.Second}
	}
	ctx := context.Background()
	confirmed := make(chan struct{})
	close(confirmed)

	g1 := generation(t, "one", state)
	if err := sw.Apply(ctx, agent.Desired{Generation: 1, StorePath: g1, Health: healthyIf("one")}, confirmed); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); got != "1:switched 1:healthy 1:confirmed" {
		t.Errorf("stages %s", got)
	}
	if n, _ := sw.Profile.Current(); n != 1 || active(t, state) != "one" {
		t.Fatalf("profile generation %d, active %q", n, active(t, state))
	}

	// Unhealthy: its liveness looks for a label it never writes.
	g2 := generation(t, "two", state)
	err := sw.Apply(ctx, agent.Desired{Generation: 2, StorePath: g2, Health: health.Spec{Liveness: "false", Timeout: time.Second}}, confirmed)
	if err == nil || !strings.Contains(err.Error(), "generation 2 is unhealthy: liveness `false` exited 1") || !strings.Contains(err.Error(), "rolled back to profile generation 1") {
		t.Fatalf("error = %v", err)
	}
	if got := rec.take(); got != "2:switched 2:failed 2:rolled_back" {
		t.Errorf("stages %s", got)
	}
	if n, _ := sw.Profile.Current(); n != 1 || active(t, state) != "one" {
		t.Fatalf("after rollback: generation %d, active %q", n, active(t, state))
	}

	// Healthy but never confirmed: the confirmation timeout fires.
	g3 := generation(t, "three", state)
	never := make(chan struct{})
	close(expired)
	err = sw.Apply(ctx, agent.Desired{Generation: 3, StorePath: g3, Health: healthyIf("three"), ConfirmTimeout: 7 * time.Second}, never)
	if err == nil || !strings.Contains(err.Error(), "generation 3 was not confirmed by the server within 7s") {
		t.Fatalf("error = %v", err)
	}
	if got := rec.take(); got != "3:switched 3:healthy 3:failed 3:rolled_back" {
		t.Errorf("stages %s", got)
	}
	if n, _ := sw.Profile.Current(); n != 1 || active(t, state) != "one" {
		t.Fatalf("after the timeout: generation %d, active %q", n, active(t, state))
	}
	if len(timeouts) != 2 || timeouts[1] != 7*time.Second || timeouts[0] != agent.DefaultConfirmTimeout {
		t.Errorf("confirmation timeouts %v", timeouts)
	}

	// Unhealthy with NoRollback: left in place, for debugging.
	g4 := generation(t, "four", state)
	err = sw.Apply(ctx, agent.Desired{Generation: 4, StorePath: g4, Health: health.Spec{Liveness: "false", Timeout: time.Second}, NoRollback: true}, confirmed)
	if err == nil || !strings.Contains(err.Error(), "left in place (--no-rollback)") {
		t.Fatalf("error = %v", err)
	}
	if got := rec.take(); got != "4:switched 4:failed" {
		t.Errorf("stages %s", got)
	}
	if p, _ := sw.Profile.Path(); p != g4 || active(t, state) != "four" {
		t.Fatalf("with NoRollback: profile on %s, active %q", p, active(t, state))
	}
}

// TestSupersededGenerationIsRolledBack: a generation waiting for the
// server's confirmation is rolled back when its context ends (a newer
// generation superseded it), and the rollback itself is not cancelled.
func TestSupersededGenerationIsRolledBack(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "active")
	rec := &recorder{}
	waiting := make(chan struct{})
	sw := &agent.Switcher{
		Profile: nix.Profile(filepath.Join(dir, "profiles", "system")),
		Report: func(g int64, st agent.Stage, log string) {
			rec.report(g, st, log)
			if st == agent.Healthy {
				close(waiting)
			}
		},
		After: func(time.Duration) <-chan time.Time { return nil }, // never times out
	}
	confirmed := make(chan struct{})
	close(confirmed)
	ctx := context.Background()
	if err := sw.Apply(ctx, agent.Desired{Generation: 1, StorePath: generation(t, "one", state), Health: health.Spec{Liveness: "true", Timeout: time.Second}}, confirmed); err != nil {
		t.Fatal(err)
	}
	waiting = make(chan struct{})
	rec.take()
	applyCtx, supersede := context.WithCancelCause(ctx)
	done := make(chan error, 1)
	go func() {
		done <- sw.Apply(applyCtx, agent.Desired{Generation: 2, StorePath: generation(t, "two", state), Health: health.Spec{Liveness: "true", Timeout: time.Second}}, make(chan struct{}))
	}()
	<-waiting // healthy, waiting for a confirmation that will not come
	supersede(agent.ErrSuperseded)
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "generation 2 was superseded before the server confirmed it") {
		t.Fatalf("error = %v", err)
	}
	if got := rec.take(); got != "2:switched 2:healthy 2:failed 2:rolled_back" {
		t.Errorf("stages %s", got)
	}
	if n, _ := sw.Profile.Current(); n != 1 || active(t, state) != "one" {
		t.Errorf("after being superseded: profile generation %d, active %q", n, active(t, state))
	}
}
