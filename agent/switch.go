// Package agent is nixmox-agent: it runs on each container, switches it to
// the generations the server asks for, checks their health, and undoes a
// switch that is unhealthy or that the server does not confirm in time —
// the "magic rollback" that keeps a change that cuts the host off from the
// server from sticking.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	// Activator runs activations; its zero value runs them directly.
	Activator Activator
	// StateDir holds the switch record, the confirmed generation and its
	// checks, and the GC root of a pulled generation; "" keeps none of them
	// (tests of the switch alone).
	StateDir string
	// CurrentSystem is the link to the running NixOS system
	// (/run/current-system); "" means the profile is not a NixOS system's.
	CurrentSystem string
	// Report is told every stage with its log; never secrets.
	Report func(generation int64, stage Stage, log string)
	// Unconfirmed, if set, is told of a healthy generation the server did
	// not confirm in time, before its rollback is reported.
	Unconfirmed func(generation int64)
	// After and Now are the clock for the confirmation timeout; nil means
	// the time package's.
	After func(time.Duration) <-chan time.Time
	Now   func() time.Time
}

func (s *Switcher) report(gen int64, st Stage, log string) {
	if s.Report != nil {
		s.Report(gen, st, log)
	}
}

func (s *Switcher) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ErrSuperseded is the cause of an apply's context when a newer generation
// replaces the one being applied; any other end of the context is the
// agent shutting down.
var ErrSuperseded = errors.New("superseded by a newer generation")

// ErrShutdown is returned when the agent stops while a generation is
// applied: nothing more is switched, and the switch record lets the next
// start finish the story.
var ErrShutdown = errors.New("the agent is stopping; the next start finishes this generation")

// shuttingDown reports whether ctx ended for another reason than a newer
// generation.
func shuttingDown(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), ErrSuperseded)
}

// Apply switches to d. It returns nil once the generation is healthy and
// the server has confirmed it (confirmed is closed or receives). Otherwise
// it rolls the profile back to the generation it replaced, activates that
// again, and returns why. ctx ending with the cause ErrSuperseded rolls
// back too (after a running activation ended: it is never interrupted);
// any other end is a shutdown, which switches nothing more and returns
// ErrShutdown with the switch record left for the next start.
func (s *Switcher) Apply(ctx context.Context, d Desired, confirmed <-chan struct{}) error {
	if d.CacheURL != "" {
		// Rooted before it exists: a garbage collection between the copy
		// and the profile cannot take it.
		if err := s.rootPending(d.StorePath); err != nil {
			s.report(d.Generation, Failed, err.Error())
			return fmt.Errorf("pulling generation %d: %w", d.Generation, err)
		}
		if err := s.Nix.CopyFrom(ctx, d.CacheURL, d.StorePath, d.CachePublicKey); err != nil {
			s.report(d.Generation, Failed, err.Error())
			return fmt.Errorf("pulling generation %d: %w", d.Generation, err)
		}
		s.report(d.Generation, Pulled, d.StorePath)
	}
	defer s.unrootPending()
	if err := s.acceptable(d.StorePath); err != nil {
		err = fmt.Errorf("refusing generation %d: %w", d.Generation, err)
		s.report(d.Generation, Failed, err.Error())
		return err
	}
	prevGen, err := s.Profile.Current()
	if err != nil {
		return err
	}
	rec := &record{Generation: d.Generation, New: d.StorePath, Health: d.Health, ConfirmTimeout: d.ConfirmTimeout}
	if prevGen > 0 {
		if rec.Previous, err = s.Profile.Path(); err != nil {
			return err
		}
		rec.PreviousProfileGen = prevGen
	}
	// Written down before anything changes: whatever happens to the agent
	// from here on, its next start knows what it was doing.
	if err := s.save(rec); err != nil {
		err = fmt.Errorf("recording the switch to generation %d: %w", d.Generation, err)
		s.report(d.Generation, Failed, err.Error())
		return err
	}
	if rec.NewProfileGen, err = s.Profile.Set(context.WithoutCancel(ctx), d.StorePath); err != nil {
		s.forget()
		s.report(d.Generation, Failed, err.Error())
		return fmt.Errorf("switching to generation %d: %w", d.Generation, err)
	}
	if err := s.save(rec); err != nil {
		return s.rollback(rec, fmt.Errorf("recording the switch to generation %d: %w", d.Generation, err))
	}
	if shuttingDown(ctx) {
		return ErrShutdown
	}
	// The activation runs to its end whatever happens here: a newer
	// generation waits for it; a shutdown leaves it running and returns
	// (the record lets the next start finish the story).
	type result struct {
		log string
		err error
	}
	done := make(chan result, 1)
	go func() {
		log, err := s.Activator.Activate(d.StorePath)
		done <- result{log, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		if shuttingDown(ctx) {
			return ErrShutdown
		}
		r = <-done
	}
	if r.err != nil {
		return s.rollback(rec, fmt.Errorf("activating generation %d: %w\n%s", d.Generation, r.err, r.log))
	}
	s.report(d.Generation, Switched, d.StorePath)
	return s.settle(ctx, rec, d.NoRollback, confirmed)
}

// settle checks a switched generation and waits for the server's
// confirmation, until rec's deadline when it has one.
func (s *Switcher) settle(ctx context.Context, rec *record, noRollback bool, confirmed <-chan struct{}) error {
	gen := rec.Generation
	if err := s.Prober.Verify(ctx, rec.Health); err != nil {
		if shuttingDown(ctx) {
			return ErrShutdown
		}
		if errors.Is(context.Cause(ctx), ErrSuperseded) {
			return s.rollback(rec, fmt.Errorf("generation %d was superseded before it was healthy", gen))
		}
		cause := fmt.Errorf("generation %d is unhealthy: %w", gen, err)
		if noRollback {
			err := fmt.Errorf("%w; %w", cause, ErrLeftInPlace)
			s.report(gen, Failed, err.Error())
			s.forget()
			return err
		}
		return s.rollback(rec, cause)
	}
	s.report(gen, Healthy, "")

	timeout := rec.ConfirmTimeout
	if timeout <= 0 {
		timeout = DefaultConfirmTimeout
	}
	if rec.Deadline.IsZero() {
		rec.Deadline = s.now().Add(timeout)
		if err := s.save(rec); err != nil {
			return s.rollback(rec, fmt.Errorf("recording the deadline of generation %d: %w", gen, err))
		}
	} else {
		timeout = max(rec.Deadline.Sub(s.now()), 0)
	}
	after := s.After
	if after == nil {
		after = time.After
	}
	select {
	case <-confirmed:
		if err := s.finish(rec); err != nil {
			return err
		}
		s.report(gen, Confirmed, "")
		return nil
	case <-after(timeout):
		if s.Unconfirmed != nil {
			s.Unconfirmed(gen)
		}
		wait := rec.ConfirmTimeout
		if wait <= 0 {
			wait = DefaultConfirmTimeout
		}
		return s.rollback(rec, fmt.Errorf("generation %d was not confirmed by the server within %s", gen, wait))
	case <-ctx.Done():
		if shuttingDown(ctx) {
			return ErrShutdown
		}
		return s.rollback(rec, fmt.Errorf("generation %d was superseded before the server confirmed it: %w", gen, context.Cause(ctx)))
	}
}

// rollback returns the profile to the generation rec replaced, activates
// it again, and deletes the failed profile generation (as deploy-rs does).
// With no earlier generation the failed one is stopped instead: its
// profile generation is deleted and its bin/deactivate, if it has one,
// runs.
func (s *Switcher) rollback(rec *record, cause error) error {
	gen := rec.Generation
	s.report(gen, Failed, cause.Error())
	ctx := context.Background() // a rollback is finished whatever ends
	if rec.Previous == "" {
		err := s.stopFailed(ctx, rec)
		s.forget()
		if err != nil {
			return fmt.Errorf("%w; there is no earlier generation to roll back to, and stopping this one failed: %v", cause, err)
		}
		return fmt.Errorf("%w; there is no earlier generation to roll back to: it was stopped", cause)
	}
	if err := s.restore(ctx, rec); err != nil {
		return fmt.Errorf("%w; rolling back to %s failed: %v", cause, rec.Previous, err)
	}
	log, err := s.Activator.Activate(rec.Previous)
	if err != nil {
		return fmt.Errorf("%w; reactivating %s failed: %v\n%s", cause, rec.Previous, err, log)
	}
	s.forget()
	cur, _ := s.Profile.Current()
	s.report(gen, RolledBack, fmt.Sprintf("back on profile generation %d: %v", cur, cause))
	return fmt.Errorf("%w; rolled back to profile generation %d", cause, cur)
}

// restore points the profile at rec.Previous again, by store path: the
// generation it had if that still leads there, else a new one; then the
// failed profile generation is deleted.
func (s *Switcher) restore(ctx context.Context, rec *record) error {
	if p, err := s.Profile.PathOf(rec.PreviousProfileGen); err == nil && p == rec.Previous {
		if err := s.Profile.SwitchTo(ctx, rec.PreviousProfileGen); err != nil {
			return err
		}
	} else if _, err := s.Profile.Set(ctx, rec.Previous); err != nil {
		return err
	}
	if cur, _ := s.Profile.Current(); rec.NewProfileGen > 0 && rec.NewProfileGen != cur {
		if err := s.Profile.Delete(ctx, rec.NewProfileGen); err != nil {
			return fmt.Errorf("deleting the failed profile generation %d: %w", rec.NewProfileGen, err)
		}
	}
	return nil
}

// stopFailed stops a failed generation that has nothing before it.
func (s *Switcher) stopFailed(ctx context.Context, rec *record) error {
	if rec.NewProfileGen > 0 {
		if err := s.Profile.Remove(ctx, rec.NewProfileGen); err != nil {
			return err
		}
	}
	deactivate := filepath.Join(rec.New, "bin", "deactivate")
	if st, err := os.Stat(deactivate); err != nil || st.Mode()&0o111 == 0 {
		return nil
	}
	a := s.Activator
	out, err := a.run([]string{deactivate})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}
