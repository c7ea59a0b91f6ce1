// Package agent is nixmox-agent: it runs on each container, switches it to
// the generations the server asks for, checks their health, and undoes a
// switch that is unhealthy or that the server does not confirm in time —
// the "magic rollback" that keeps a change that cuts the host off from the
// server from sticking.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/nix"
)

// DefaultConfirmTimeout is how long a healthy generation waits for the
// server's confirmation before the agent rolls it back.
const DefaultConfirmTimeout = 30 * time.Second

// ErrLeftInPlace is part of the error of a generation whose checks failed
// and that was left running, as its desired generation asked
// (no_rollback).
var ErrLeftInPlace = errors.New("left in place (--no-rollback)")

// Desired is a generation the server wants the container on.
type Desired struct {
	Generation     int64
	StorePath      string
	CacheURL       string // "" when the path is already in the local store
	CachePublicKey string
	ConfirmTimeout time.Duration
	Health         health.Spec
	// NoRollback leaves the generation in place when its checks fail.
	NoRollback bool
}

// Stage is how far a switch got.
type Stage string

// The stages a switch reports.
const (
	Pulled     Stage = "pulled"
	Switched   Stage = "switched"
	Healthy    Stage = "healthy"
	Confirmed  Stage = "confirmed"
	Failed     Stage = "failed"
	RolledBack Stage = "rolled_back"
)

// Switcher switches the container's profile between generations.
type Switcher struct {
	// Profile is the system profile the agent manages.
	Profile nix.Profile
	Nix     nix.Runner
	Prober  health.Prober
	// Report is told every stage with its log; never secrets.
	Report func(generation int64, stage Stage, log string)
	// Unconfirmed, if set, is told of a healthy generation the server did
	// not confirm in time, before its rollback is reported.
	Unconfirmed func(generation int64)
	// After is the clock for the confirmation timeout; nil means time.After.
	After func(time.Duration) <-chan time.Time
	// Env is added to the activation's environment (NIXMOX_STATE_DIR,
	// NIXMOX_SECRETS_DIR, ...).
	Env []string
}

func (s *Switcher) report(gen int64, st Stage, log string) {
	if s.Report != nil {
		s.Report(gen, st, log)
	}
}

// Apply switches to d. It returns nil once the generation is healthy and
// the server has confirmed it (confirmed is closed or receives). Otherwise
// it rolls the profile back to the generation it replaced, activates that
// again, and returns why.
func (s *Switcher) Apply(ctx context.Context, d Desired, confirmed <-chan struct{}) error {
	if d.CacheURL != "" {
		if err := s.Nix.CopyFrom(ctx, d.CacheURL, d.StorePath, d.CachePublicKey); err != nil {
			s.report(d.Generation, Failed, err.Error())
			return fmt.Errorf("pulling generation %d: %w", d.Generation, err)
		}
		s.report(d.Generation, Pulled, d.StorePath)
	}
	prev, err := s.Profile.Current()
	if err != nil {
		return err
	}
	if _, err := s.Profile.Set(ctx, d.StorePath); err != nil {
		s.report(d.Generation, Failed, err.Error())
		return fmt.Errorf("switching to generation %d: %w", d.Generation, err)
	}
	if log, err := Activate(ctx, d.StorePath, s.Env); err != nil {
		return s.rollback(ctx, d.Generation, prev, fmt.Errorf("activating generation %d: %w\n%s", d.Generation, err, log))
	}
	s.report(d.Generation, Switched, d.StorePath)

	if err := s.Prober.Verify(ctx, d.Health); err != nil {
		cause := fmt.Errorf("generation %d is unhealthy: %w", d.Generation, err)
		if d.NoRollback {
			err := fmt.Errorf("%w; %w", cause, ErrLeftInPlace)
			s.report(d.Generation, Failed, err.Error())
			return err
		}
		return s.rollback(ctx, d.Generation, prev, cause)
	}
	s.report(d.Generation, Healthy, "")

	timeout := d.ConfirmTimeout
	if timeout <= 0 {
		timeout = DefaultConfirmTimeout
	}
	after := s.After
	if after == nil {
		after = time.After
	}
	select {
	case <-confirmed:
		s.report(d.Generation, Confirmed, "")
		return nil
	case <-after(timeout):
		if s.Unconfirmed != nil {
			s.Unconfirmed(d.Generation)
		}
		return s.rollback(ctx, d.Generation, prev, fmt.Errorf("generation %d was not confirmed by the server within %s", d.Generation, timeout))
	case <-ctx.Done():
		return s.rollback(ctx, d.Generation, prev, fmt.Errorf("generation %d was superseded before the server confirmed it: %w", d.Generation, ctx.Err()))
	}
}

// rollback returns the profile to generation prev and activates it again.
func (s *Switcher) rollback(ctx context.Context, gen int64, prev int, cause error) error {
	// A rollback is finished even when what it undoes was cancelled.
	ctx = context.WithoutCancel(ctx)
	s.report(gen, Failed, cause.Error())
	if prev == 0 {
		return fmt.Errorf("%w; there is no earlier generation to roll back to", cause)
	}
	if err := s.Profile.SwitchTo(ctx, prev); err != nil {
		return fmt.Errorf("%w; rolling back failed: %v", cause, err)
	}
	path, err := s.Profile.Path()
	if err == nil {
		var log string
		if log, err = Activate(ctx, path, s.Env); err != nil {
			err = fmt.Errorf("%v\n%s", err, log)
		}
	}
	if err != nil {
		return fmt.Errorf("%w; reactivating profile generation %d failed: %v", cause, prev, err)
	}
	s.report(gen, RolledBack, fmt.Sprintf("back on profile generation %d: %v", prev, cause))
	return fmt.Errorf("%w; rolled back to profile generation %d", cause, prev)
}

// Activate runs a generation's activation: NixOS's
// bin/switch-to-configuration switch, or a generic closure's bin/activate;
// a closure with neither needs none. env is added to the agent's own
// environment. It returns the output.
func Activate(ctx context.Context, storePath string, env []string) (string, error) {
	var argv []string
	for _, c := range [][]string{{"bin/switch-to-configuration", "switch"}, {"bin/activate"}} {
		p := filepath.Join(storePath, c[0])
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			argv = append([]string{p}, c[1:]...)
			break
		}
	}
	if argv == nil {
		return "", nil
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
