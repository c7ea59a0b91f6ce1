package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nixmox/nixmox/internal/testenv"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// TestBackoff: 1 s doubling to 5 s while connecting fails, back to 1 s
// after a stream was open; the jitter scales each wait by 0.5 to 1.5.
func TestBackoff(t *testing.T) {
	j := 0.5 // the middle: waits are the delays themselves
	b := backoff{jitter: func() float64 { return j }}
	var got []string
	for _, connected := range []bool{false, false, false, false, false, false, false, true, false} {
		got = append(got, b.next(connected).String())
	}
	if want := "1s 2s 4s 5s 5s 5s 5s 1s 2s"; strings.Join(got, " ") != want {
		t.Errorf("waits %s, want %s", strings.Join(got, " "), want)
	}
	j = 0
	if w := b.next(true); w != 500*time.Millisecond {
		t.Errorf("the least jitter: %s, want half of 1 s", w)
	}
	j = 0.999
	if w := b.next(false); w < 2990*time.Millisecond || w >= 3*time.Second {
		t.Errorf("the most jitter: %s, want just under 1.5 × 2 s", w)
	}
}

// closureFor builds, with real Nix, a closure whose bin/activate writes
// its label to state.
func closureFor(t *testing.T, label, state string) string {
	t.Helper()
	testenv.RequireTool(t, "nix-build")
	expr := testenv.ActivateExpr("nixmox-run-test-"+label, fmt.Sprintf("#!/bin/sh\necho %s > %s\n", label, state))
	f := filepath.Join(t.TempDir(), "gen.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-build", f, "--no-out-link", "--option", "substituters", "").Output()
	if err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// stages records the stage reports the agent sends, and lets a test wait
// for one.
type stages struct {
	mu   sync.Mutex
	seen []string
	ch   chan string
}

func (s *stages) send(m *nixmoxv1.ConnectRequest) error {
	if r := m.GetStage(); r != nil {
		line := fmt.Sprintf("%d:%s", r.GetGeneration(), strings.TrimPrefix(r.GetStage().String(), "STAGE_"))
		s.mu.Lock()
		s.seen = append(s.seen, line)
		s.mu.Unlock()
		s.ch <- line
	}
	return nil
}

// await reads reports until want comes; the ones before it are returned.
func (s *stages) await(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	for {
		select {
		case got := <-s.ch:
			if got == want {
				return before
			}
			before = append(before, got)
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s; saw %v", want, before)
		}
	}
}

// TestDesiredSupersedesOrIgnores drives the agent's handling of desired
// generations through real switches: the one being applied asked again is
// not applied twice; an older one is ignored; a newer one supersedes it —
// the waiting one is rolled back, then the newer applied — and is
// confirmed.
func TestDesiredSupersedesOrIgnores(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "active")
	var logged syncLog
	st := newState(Config{Service: "web", StateDir: filepath.Join(dir, "agent"), Profile: filepath.Join(dir, "profiles", "system")},
		hclog.New(&hclog.LoggerOptions{Output: &logged}))
	rec := &stages{ch: make(chan string, 64)}
	st.send = rec.send
	never := make(chan time.Time)
	st.sw.After = func(time.Duration) <-chan time.Time { return never } // the confirmation never times out
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	desired := func(gen int64, label string) *nixmoxv1.DesiredGeneration {
		return &nixmoxv1.DesiredGeneration{Generation: gen, StorePath: closureFor(t, label, state),
			Health: &nixmoxv1.HealthSpec{Liveness: "grep -qx " + label + " " + state}}
	}
	one, two, three := desired(1, "one"), desired(2, "two"), desired(3, "three")

	st.desired(ctx, one)
	rec.await(t, "1:HEALTHY")
	st.confirmed(1)
	rec.await(t, "1:CONFIRMED")
	st.desired(ctx, two)
	rec.await(t, "2:HEALTHY") // waiting for the server's confirmation
	st.desired(ctx, two)      // a restarted server asks again
	st.desired(ctx, one)      // an older one
	st.mu.Lock()
	applying, next := st.applying, st.next
	st.mu.Unlock()
	if applying != 2 || next != nil {
		t.Errorf("after asking for 2 again and for the older 1: applying %d, next %v; want 2 still waiting, nothing next", applying, next)
	}
	st.desired(ctx, three) // the server moved on
	if before := strings.Join(rec.await(t, "2:ROLLED_BACK"), " "); before != "2:FAILED" {
		t.Errorf("before generation 2 was rolled back: %q, want only its failure (not 2 applied twice, nor 1)", before)
	}
	rec.await(t, "3:HEALTHY")
	if data, _ := os.ReadFile(state); strings.TrimSpace(string(data)) != "three" {
		t.Errorf("the system runs %q, want three", data)
	}
	st.confirmed(3)
	rec.await(t, "3:CONFIRMED")
	// The confirmation is asynchronous to the report: wait for the state.
	for range 500 {
		st.mu.Lock()
		active, applying := st.active, st.applying
		st.mu.Unlock()
		if active == 3 && applying == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.active != 3 || st.applying != 0 || st.next != nil {
		t.Errorf("after confirming 3: active %d, applying %d, next %v", st.active, st.applying, st.next)
	}
	if want := "1:SWITCHED 1:HEALTHY 1:CONFIRMED 2:SWITCHED 2:HEALTHY 2:FAILED 2:ROLLED_BACK 3:SWITCHED 3:HEALTHY 3:CONFIRMED"; strings.Join(rec.seen, " ") != want {
		t.Errorf("reports %v, want %s", rec.seen, want)
	}
	// The agent's own log has every stage, the failure with its cause.
	for _, line := range []string{"stage: generation=3 stage=switched", "stage: generation=3 stage=confirmed",
		"stage: generation=2 stage=failed cause=\"generation 2 was superseded"} {
		if !strings.Contains(logged.String(), line) {
			t.Errorf("the agent's log lacks %q:\n%s", line, logged.String())
		}
	}
}

// syncLog is a log written from several goroutines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
