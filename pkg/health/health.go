// Package health runs a service's health checks with the manifest's
// semantics; the agent uses it on its container, and the server's tests use
// it to check what they deploy.
//
//   - startup is polled every second at first, the delay doubling up to
//     interval, until it passes; it fails once timeout has gone by (after
//     start_period).
//   - liveness and readiness pass as soon as their command succeeds, and
//     fail after retries further failures, interval apart.
//
// Each command runs with `sh -c`, bounded by timeout. Waiting goes through
// an injectable clock, so tests do not sleep.
package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Spec is a service's checks.
type Spec struct {
	Startup, Liveness, Readiness string
	Interval, Timeout            time.Duration
	Retries                      int
	StartPeriod                  time.Duration
}

// Prober runs checks. The zero value runs commands with sh and waits in
// real time.
type Prober struct {
	// Dir is the working directory of the checks ("" = this process's).
	Dir string
	// Path is put before this process's PATH for the checks: the
	// service's system's programs (curl, dig, pg_isready) come first.
	Path string
	// Run runs one command; nil means sh -c bounded by the spec's timeout.
	Run func(ctx context.Context, command string, timeout time.Duration) (output string, err error)
	// After and Now are the clock; nil means the time package's.
	After func(time.Duration) <-chan time.Time
	Now   func() time.Time
}

// CheckError is a check that did not pass.
type CheckError struct {
	Check   string // startup, liveness, readiness
	Command string
	Tries   int
	Output  string
	Err     error
}

func (e *CheckError) Error() string {
	msg := fmt.Sprintf("%s `%s` %v", e.Check, e.Command, e.Err)
	if e.Tries > 1 {
		msg += fmt.Sprintf(" (%d tries)", e.Tries)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += ": " + truncate(out, 200)
	}
	return msg
}

func (e *CheckError) Unwrap() error { return e.Err }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (p Prober) after(d time.Duration) <-chan time.Time {
	if p.After != nil {
		return p.After(d)
	}
	return time.After(d)
}

func (p Prober) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p Prober) run(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	if p.Run != nil {
		return p.Run(ctx, cmd, timeout)
	}
	return shell(ctx, p.Dir, p.Path, cmd, timeout)
}

// Shell runs command with sh -c, stopped after timeout; the error says how
// it ended ("exited 7", "timed out after 5s").
func Shell(ctx context.Context, command string, timeout time.Duration) (string, error) {
	return ShellIn(ctx, "", command, timeout)
}

// ShellIn is Shell in the working directory dir ("" = this process's).
func ShellIn(ctx context.Context, dir, command string, timeout time.Duration) (string, error) {
	return shell(ctx, dir, "", command, timeout)
}

func shell(ctx context.Context, dir, path, command string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Dir = dir
	if path != "" {
		cmd.Env = append(os.Environ(), "PATH="+path+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	// The check's own children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	switch {
	case err == nil:
		return out.String(), nil
	case ctx.Err() == context.DeadlineExceeded:
		return out.String(), fmt.Errorf("timed out after %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), fmt.Errorf("exited %d", ee.ExitCode())
	}
	return out.String(), err
}

// Startup polls the startup check until it passes or the timeout has gone
// by (after the start period).
func (p Prober) Startup(ctx context.Context, s Spec) error {
	if s.Startup == "" {
		return nil
	}
	if s.StartPeriod > 0 {
		if err := p.wait(ctx, s.StartPeriod); err != nil {
			return err
		}
	}
	deadline := p.now().Add(s.Timeout)
	delay := time.Second
	for tries := 1; ; tries++ {
		out, err := p.run(ctx, s.Startup, s.Timeout)
		if err == nil {
			return nil
		}
		if !p.now().Before(deadline) || ctx.Err() != nil {
			return &CheckError{Check: "startup", Command: s.Startup, Tries: tries, Output: out,
				Err: fmt.Errorf("did not pass within %s: last %v", s.Timeout, err)}
		}
		if err := p.wait(ctx, min(delay, max(deadline.Sub(p.now()), 0))); err != nil {
			return err
		}
		delay = min(delay*2, max(s.Interval, time.Second))
	}
}

// Check runs a liveness or readiness command: it passes at the first
// success and fails after Retries further failures, Interval apart.
func (p Prober) Check(ctx context.Context, name, command string, s Spec) error {
	if command == "" {
		return nil
	}
	for tries := 1; ; tries++ {
		out, err := p.run(ctx, command, s.Timeout)
		if err == nil {
			return nil
		}
		if tries > s.Retries || ctx.Err() != nil {
			return &CheckError{Check: name, Command: command, Tries: tries, Output: out, Err: err}
		}
		if err := p.wait(ctx, s.Interval); err != nil {
			return err
		}
	}
}

// Verify is the deploy gate: startup, then liveness, then readiness.
func (p Prober) Verify(ctx context.Context, s Spec) error {
	if err := p.Startup(ctx, s); err != nil {
		return err
	}
	if err := p.Check(ctx, "liveness", s.Liveness, s); err != nil {
		return err
	}
	return p.Check(ctx, "readiness", s.Readiness, s)
}

func (p Prober) wait(ctx context.Context, d time.Duration) error {
	select {
	case <-p.after(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
