package health_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixmox/nixmox/pkg/health"
)

// fakeClock advances by exactly what is waited for, instantly.
type fakeClock struct {
	now    time.Time
	waited []time.Duration
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.waited = append(c.waited, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) Now() time.Time { return c.now }

// script returns a Run func whose n-th call (from 1) fails unless n is in
// passOn.
func script(passFrom int, calls *int) func(context.Context, string, time.Duration) (string, error) {
	return func(context.Context, string, time.Duration) (string, error) {
		*calls++
		if passFrom > 0 && *calls >= passFrom {
			return "ok", nil
		}
		return "connection refused", errors.New("exited 7")
	}
}

func TestStartupBacksOffToInterval(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	calls := 0
	p := health.Prober{Run: script(6, &calls), After: clock.After, Now: clock.Now}
	spec := health.Spec{Startup: "check", Interval: 5 * time.Second, Timeout: time.Minute}
	if err := p.Startup(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(clock.waited); got != "[1s 2s 4s 5s 5s]" {
		t.Errorf("waited %s, want 1s 2s 4s then the interval", got)
	}
}

func TestStartupTimesOut(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	calls := 0
	p := health.Prober{Run: script(0, &calls), After: clock.After, Now: clock.Now}
	err := p.Startup(context.Background(), health.Spec{Startup: "systemctl is-active x", Interval: 10 * time.Second, Timeout: 30 * time.Second, StartPeriod: 5 * time.Second})
	var ce *health.CheckError
	if !errors.As(err, &ce) || ce.Check != "startup" || !strings.Contains(err.Error(), "did not pass within 30s: last exited 7") {
		t.Fatalf("error = %v", err)
	}
	var total time.Duration
	for _, d := range clock.waited {
		total += d
	}
	if total != 35*time.Second { // start period + the timeout, not a second more
		t.Errorf("waited %v in all (%v)", total, clock.waited)
	}
}

func TestLivenessRetries(t *testing.T) {
	for _, tc := range []struct {
		passFrom, retries int
		wantErr           bool
		wantCalls         int
	}{
		{1, 3, false, 1},
		{3, 3, false, 3},
		{0, 3, true, 4},
		{0, 0, true, 1},
	} {
		clock := &fakeClock{now: time.Unix(0, 0)}
		calls := 0
		p := health.Prober{Run: script(tc.passFrom, &calls), After: clock.After, Now: clock.Now}
		err := p.Check(context.Background(), "liveness", "curl -f http://localhost/", health.Spec{Interval: 7 * time.Second, Timeout: time.Second, Retries: tc.retries})
		if (err != nil) != tc.wantErr || calls != tc.wantCalls {
			t.Errorf("%+v: err=%v calls=%d", tc, err, calls)
		}
		for _, d := range clock.waited {
			if d != 7*time.Second {
				t.Errorf("waited %v between tries", d)
			}
		}
		if err != nil && !strings.Contains(err.Error(), "liveness `curl -f http://localhost/` exited 7") {
			t.Errorf("message %q", err)
		}
	}
}

// TestShell runs real commands: success, exit status, output, and a
// timeout that also stops the command's children.
func TestShell(t *testing.T) {
	ctx := context.Background()
	if out, err := health.Shell(ctx, "echo up", time.Minute); err != nil || out != "up\n" {
		t.Errorf("out %q, err %v", out, err)
	}
	if _, err := health.Shell(ctx, "exit 7", time.Minute); err == nil || err.Error() != "exited 7" {
		t.Errorf("err %v", err)
	}
	// A check that starts children and outlives its timeout: the children
	// (which hold the output pipe open, and would live a minute) must die
	// with it — the whole process group is killed — not be left orphaned.
	pids := filepath.Join(t.TempDir(), "pids")
	_, err := health.Shell(ctx, "sleep 60 & echo $! >> "+pids+"; sleep 60 & echo $! >> "+pids+"; wait", 2*time.Second)
	if err == nil || err.Error() != "timed out after 2s" {
		t.Errorf("err %v", err)
	}
	data, err := os.ReadFile(pids)
	if err != nil || len(strings.Fields(string(data))) != 2 {
		t.Fatalf("the check did not start its two children in 2 s: %q %v", data, err)
	}
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		if !gone(pid) {
			t.Errorf("child %d of the timed-out check is still running", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// gone waits (up to 10 s, polling its state) for pid to exit; a zombie
// that nobody reaped yet has exited.
func gone(pid int) bool {
	for range 500 {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestVerifyOrder(t *testing.T) {
	var ran []string
	p := health.Prober{Run: func(_ context.Context, cmd string, _ time.Duration) (string, error) {
		ran = append(ran, cmd)
		return "", nil
	}}
	if err := p.Verify(context.Background(), health.Spec{Startup: "s", Liveness: "l", Readiness: "r", Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ran, ",") != "s,l,r" {
		t.Errorf("ran %v", ran)
	}
}

// TestChecksFindTheSystemsPrograms: a check runs with Prober.Path first on
// its PATH — the service system's programs (/run/current-system/sw/bin on
// NixOS), which the agent's own PATH does not have.
func TestChecksFindTheSystemsPrograms(t *testing.T) {
	sys := t.TempDir()
	if err := os.WriteFile(filepath.Join(sys, "nixmox-probe-only-here"), []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := health.Spec{Liveness: "nixmox-probe-only-here", Timeout: 10 * time.Second}
	if err := (health.Prober{}).Verify(context.Background(), spec); err == nil {
		t.Fatal("the program was found without the system's path: the test shows nothing")
	}
	if err := (health.Prober{Path: sys}).Verify(context.Background(), spec); err != nil {
		t.Errorf("with the system's path: %v", err)
	}
}
