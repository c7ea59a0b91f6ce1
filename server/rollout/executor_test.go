package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nixmox/nixmox/server/rollout"
	"github.com/nixmox/nixmox/server/store"
)

func newStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func steps(spec ...string) []rollout.Step {
	var out []rollout.Step
	for _, sp := range spec {
		id, needs, _ := strings.Cut(sp, "<")
		st := rollout.Step{ID: id}
		if needs != "" {
			st.Needs = strings.Split(needs, ",")
		}
		out = append(out, st)
	}
	return out
}

func opts(s *store.Store) rollout.Options {
	return rollout.Options{RolloutID: "r1", Store: s,
		After: func(time.Duration) <-chan time.Time { // retries without waiting
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		}}
}

// TestOrderAndParallelism: each step runs after all it needs; two
// independent steps run at the same time (each waits for the other to have
// started, which would deadlock if they ran one after the other).
func TestOrderAndParallelism(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	finished := map[string]bool{}
	aStarted, bStarted := make(chan bool), make(chan bool)
	plan := steps("infra", "a<infra", "b<infra", "c<a,b")
	res, err := rollout.Execute(ctx, plan, func(ctx context.Context, st rollout.Step, _ int) error {
		mu.Lock()
		for _, n := range st.Needs {
			if !finished[n] {
				t.Errorf("%s started before %s finished", st.ID, n)
			}
		}
		mu.Unlock()
		switch st.ID {
		case "a":
			close(aStarted)
			select {
			case <-bStarted:
			case <-ctx.Done():
				return errors.New("b never ran alongside a")
			}
		case "b":
			close(bStarted)
			select {
			case <-aStarted:
			case <-ctx.Done():
				return errors.New("a never ran alongside b")
			}
		}
		mu.Lock()
		finished[st.ID] = true
		mu.Unlock()
		return nil
	}, opts(s))
	if err != nil || !res.OK {
		t.Fatalf("res %+v, err %v", res, err)
	}
}

// TestParallelCap: never more than Parallel steps at once, and the cap is
// reached.
func TestParallelCap(t *testing.T) {
	s := newStore(t)
	var now, peak atomic.Int32
	o := opts(s)
	o.Parallel = 3
	var spec []string
	for i := range 12 {
		spec = append(spec, fmt.Sprintf("s%d", i))
	}
	gate := make(chan struct{})
	var once sync.Once
	res, err := rollout.Execute(context.Background(), steps(spec...), func(_ context.Context, _ rollout.Step, _ int) error {
		n := now.Add(1)
		defer now.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == 3 {
			once.Do(func() { close(gate) })
		}
		<-gate // hold until three run together
		return nil
	}, o)
	if err != nil || !res.OK || peak.Load() != 3 {
		t.Fatalf("peak %d, res %+v, err %v", peak.Load(), res, err)
	}
}

// TestFailureHoldsDependentsOnly: a failed step holds what needs it,
// naming the root cause; independent steps finish; the result is not OK.
func TestFailureHoldsDependentsOnly(t *testing.T) {
	s := newStore(t)
	plan := steps("infra", "db<infra", "app<db", "web<app", "other<infra")
	res, err := rollout.Execute(context.Background(), plan, func(_ context.Context, st rollout.Step, _ int) error {
		if st.ID == "db" {
			return errors.New("liveness `pg_isready` exited 2")
		}
		return nil
	}, opts(s))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]rollout.State{"infra": rollout.Succeeded, "db": rollout.Failed, "app": rollout.Held, "web": rollout.Held, "other": rollout.Succeeded}
	for id, st := range want {
		if res.States[id] != st {
			t.Errorf("%s: %s, want %s", id, res.States[id], st)
		}
	}
	if res.OK {
		t.Error("OK despite a failure")
	}
	// The root's error is on the root's line only; each held step names
	// what it needs, and the failed step behind a held one.
	if got := res.Causes["db"]; got != "db failed: liveness `pg_isready` exited 2" {
		t.Errorf("db's cause: %q", got)
	}
	if got := res.Causes["app"]; got != "needs db (failed)" {
		t.Errorf("app's cause: %q", got)
	}
	if got := res.Causes["web"]; got != "needs app (held; db failed)" {
		t.Errorf("web's cause: %q", got)
	}
	if got, want := res.Holds["web"], (rollout.Hold{Needs: "app", Root: "db"}); got != want {
		t.Errorf("web's hold: %+v, want %+v", got, want)
	}
	// The store agrees.
	recs, _ := s.Steps("r1")
	if recs["web"].State != "held" || recs["db"].State != "failed" || recs["other"].State != "succeeded" {
		t.Errorf("stored %+v", recs)
	}
	if recs["web"].Needs != "app" || recs["web"].Root != "db" || recs["app"].Needs != "db" || recs["app"].Root != "db" {
		t.Errorf("stored holds: web %+v, app %+v", recs["web"], recs["app"])
	}
}

// TestHaltAndFailFast: a failed Halt step (core) stops everything not yet
// started; so does any failure with FailFast.
func TestHaltAndFailFast(t *testing.T) {
	for _, tc := range []struct {
		name     string
		halt     bool
		failFast bool
	}{{"core failure halts", true, false}, {"fail fast", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			plan := steps("core", "x<core", "indep")
			plan[0].Halt = tc.halt
			o := opts(s)
			o.Parallel = 1 // core runs, fails; indep has not started yet
			o.FailFast = tc.failFast
			var ran []string
			res, _ := rollout.Execute(context.Background(), plan, func(_ context.Context, st rollout.Step, _ int) error {
				ran = append(ran, st.ID)
				if st.ID == "core" {
					return errors.New("boom")
				}
				return nil
			}, o)
			if strings.Join(ran, ",") != "core" || res.States["indep"] != rollout.Held {
				t.Fatalf("ran %v, states %v", ran, res.States)
			}
			if got := res.Causes["indep"]; got != "the rollout stopped after core failed" {
				t.Errorf("cause %q", got)
			}
			if got := res.Holds["indep"]; got != (rollout.Hold{Root: "core"}) {
				t.Errorf("hold %+v", got)
			}
		})
	}
}

// TestRetries: a transient failure is retried up to Retries times with
// growing delays; a permanent one is not retried.
func TestRetries(t *testing.T) {
	s := newStore(t)
	o := opts(s)
	o.Retries, o.RetryDelay = 3, time.Second
	o.Jitter = func() float64 { return 0.5 } // factor 1.0
	var mu sync.Mutex
	var delays []time.Duration
	o.After = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		defer mu.Unlock()
		delays = append(delays, d)
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	calls := map[string]int{}
	res, _ := rollout.Execute(context.Background(), steps("flaky", "broken", "down"), func(_ context.Context, st rollout.Step, attempt int) error {
		mu.Lock()
		calls[st.ID]++
		mu.Unlock()
		switch {
		case st.ID == "flaky" && attempt < 3:
			return fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
		case st.ID == "broken":
			return errors.New("syntax error")
		case st.ID == "down":
			return &rollout.TransientError{Err: errors.New("503")}
		}
		return nil
	}, o)
	if res.States["flaky"] != rollout.Succeeded || calls["flaky"] != 3 {
		t.Errorf("flaky: %s after %d calls", res.States["flaky"], calls["flaky"])
	}
	if calls["broken"] != 1 || calls["down"] != 4 {
		t.Errorf("calls %v", calls)
	}
	if !strings.Contains(res.Causes["down"], "(after 4 attempts)") {
		t.Errorf("down: %q", res.Causes["down"])
	}
	recs, _ := s.Steps("r1")
	if recs["flaky"].Attempts != 3 {
		t.Errorf("stored attempts %d", recs["flaky"].Attempts)
	}
	// Each retrying step's delays double: 1s, 2s, 4s (flaky uses two).
	count := map[time.Duration]int{}
	for _, d := range delays {
		count[d]++
	}
	if count[time.Second] != 2 || count[2*time.Second] != 2 || count[4*time.Second] != 1 || len(delays) != 5 {
		t.Errorf("delays %v", delays)
	}
}

// TestFingerprintsSkipUnchanged: a second run with the same inputs runs
// nothing; a changed input reruns just that step; a failure clears the
// fingerprint so the step runs again next time.
func TestFingerprintsSkipUnchanged(t *testing.T) {
	s := newStore(t)
	inputs := map[string]string{"a": "1", "b": "1", "c": "1"}
	plan := steps("a", "b<a", "c<b")
	fail := ""
	exec := func() (ran []string, res rollout.Result) {
		o := opts(s)
		o.Fingerprint = func(st rollout.Step) (string, error) { return inputs[st.ID], nil }
		res, err := rollout.Execute(context.Background(), plan, func(_ context.Context, st rollout.Step, _ int) error {
			ran = append(ran, st.ID)
			if st.ID == fail {
				return errors.New("failed")
			}
			return nil
		}, o)
		if err != nil {
			t.Fatal(err)
		}
		return ran, res
	}
	if ran, _ := exec(); strings.Join(ran, ",") != "a,b,c" {
		t.Fatalf("first run: %v", ran)
	}
	if ran, res := exec(); len(ran) != 0 || !res.OK || res.States["b"] != rollout.Skipped {
		t.Fatalf("unchanged run ran %v, %+v", ran, res)
	}
	inputs["b"] = "2"
	if ran, _ := exec(); strings.Join(ran, ",") != "b" {
		t.Fatalf("after changing b ran %v", ran)
	}
	inputs["c"], fail = "2", "c"
	exec()
	fail = ""
	if ran, _ := exec(); strings.Join(ran, ",") != "c" {
		t.Fatalf("after c failed ran %v", ran)
	}
}

// TestRunningIsRecordedFirst: when a step's work starts, the store already
// says it is running.
func TestRunningIsRecordedFirst(t *testing.T) {
	s := newStore(t)
	_, err := rollout.Execute(context.Background(), steps("a"), func(_ context.Context, st rollout.Step, _ int) error {
		recs, _ := s.Steps("r1")
		if recs["a"].State != "running" {
			t.Errorf("store says %q while a runs", recs["a"].State)
		}
		return nil
	}, opts(s))
	if err != nil {
		t.Fatal(err)
	}
}

// TestRefreshStoresTheStateAfterTheStep: a Refresh step whose inputs are
// live state it repairs stores the fingerprint of the repaired state, so
// the next rollout skips it; drift afterwards makes it run again.
func TestRefreshStoresTheStateAfterTheStep(t *testing.T) {
	s := newStore(t)
	live := "missing"
	plan := []rollout.Step{{ID: "infra", Refresh: true}}
	exec := func() (ran int) {
		o := opts(s)
		o.Fingerprint = func(rollout.Step) (string, error) { return live, nil }
		if _, err := rollout.Execute(context.Background(), plan, func(context.Context, rollout.Step, int) error {
			ran++
			live = "ok" // the step repairs the live state
			return nil
		}, o); err != nil {
			t.Fatal(err)
		}
		return ran
	}
	if exec() != 1 {
		t.Fatal("first run did not run the step")
	}
	if exec() != 0 {
		t.Fatal("the repaired state made the step run again")
	}
	live = "drifted"
	if exec() != 1 {
		t.Fatal("drift did not make the step run")
	}
}
