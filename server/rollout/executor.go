// Package rollout runs a plan's steps: each as soon as everything it needs
// has succeeded — never waiting for a whole phase — at most Parallel at a
// time, retrying transient failures with exponential backoff and jitter,
// skipping steps whose fingerprint has not changed since their last
// success, and writing every transition to the state store before acting
// on it.
//
// Failure policy: a failed step holds everything that (transitively) needs
// it, naming the root cause; independent steps go on. A failed step marked
// Halt (the core phases) stops the rollout from starting anything new, and
// so does any failure with FailFast. Running steps always finish.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/nixmox/nixmox/server/store"
)

// State is where a step ended up.
type State string

// The states of a step.
const (
	Pending   State = "pending"
	Running   State = "running"
	Succeeded State = "succeeded"
	Skipped   State = "skipped" // unchanged since its last success: counts as success
	Failed    State = "failed"
	Held      State = "held" // not started: something it needs did not succeed
)

// Step is one step to run.
type Step struct {
	ID    string
	Needs []string
	// Halt stops the rollout when this step fails (core phases).
	Halt bool
	// Refresh computes the step's fingerprint again once it succeeded and
	// stores that one: for a step whose inputs include live state it
	// repairs (the containers), so that the repaired state is what the next
	// rollout compares with.
	Refresh bool
}

// RunFunc does a step's work. attempt counts from 1.
type RunFunc func(ctx context.Context, step Step, attempt int) error

// StateStore is what the executor records transitions in.
type StateStore interface {
	PutSteps(rolloutID string, sts []store.StepRecord) error
	Fingerprint(stepID string) (string, error)
}

// Options configure Execute.
type Options struct {
	// RolloutID names the rollout in the store.
	RolloutID string
	// Store records every transition before it is acted on; required.
	Store StateStore
	// Parallel caps the steps running at once; 0 means 8.
	Parallel int
	// FailFast stops starting steps at the first failure.
	FailFast bool
	// Retries is how many times a transient failure is retried.
	Retries int
	// RetryDelay is the first retry's delay; later ones double, with jitter.
	RetryDelay time.Duration
	// Fingerprint returns a step's inputs' hash, computed once everything it
	// needs has finished; nil runs every step. A step whose fingerprint
	// equals the one recorded at its last success is skipped.
	Fingerprint func(Step) (string, error)
	// Force runs steps even when their fingerprint is unchanged.
	Force bool
	// OnEvent, if set, is called for every transition, from one goroutine
	// at a time.
	OnEvent func(Event)
	// After and Jitter are for tests: time.After and a [0,1) random source.
	After  func(time.Duration) <-chan time.Time
	Jitter func() float64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Event is one transition of one step.
type Event struct {
	Step    string
	State   State
	Attempt int
	// Cause says why a step failed (its error) or was held (what it needs,
	// once: "needs nix:core:dns (failed)"); a failure's error is never
	// repeated on the steps held because of it.
	Cause string
	// Needs is, for a held step, the step it needs that did not succeed
	// ("" when the rollout stopped before it could start).
	Needs string
	// Root is, for a held step, the failed step at the root of it.
	Root string
}

// Result is how a rollout ended.
type Result struct {
	States map[string]State
	Causes map[string]string
	// Holds are, for each held step, what it needs and the failed step at
	// the root.
	Holds map[string]Hold
	// OK is set when every step succeeded or was skipped.
	OK bool
}

// Hold is why a step was held: the step it needs that did not succeed,
// and the failed step at the root ("" Needs: the rollout stopped).
type Hold struct{ Needs, Root string }

// TransientError marks an error worth retrying.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying: marked transient, a
// refused or reset connection, or a timeout.
func IsTransient(err error) bool {
	var te *TransientError
	var ne net.Error
	switch {
	case errors.As(err, &te):
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ETIMEDOUT):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

type outcome struct {
	idx      int
	state    State
	attempts int
	fp       string
	err      error
}

// Execute runs the steps (which must be in an order where each comes after
// all it needs, as plan.Plan's are) and returns how each ended. It returns
// an error only when the store cannot record a transition: then nothing
// more is started, since acting on an unrecorded transition could repeat
// work after a crash.
func Execute(ctx context.Context, steps []Step, run RunFunc, opts Options) (Result, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	idx := make(map[string]int, len(steps))
	for i, s := range steps {
		idx[s.ID] = i
	}
	users := make([][]int, len(steps))
	waiting := make([]int, len(steps))
	for i, s := range steps {
		for _, n := range s.Needs {
			j, ok := idx[n]
			if !ok || j >= i {
				return Result{}, fmt.Errorf("step %s needs %q, which is not before it", s.ID, n)
			}
			users[j] = append(users[j], i)
		}
		waiting[i] = len(s.Needs)
	}
	res := Result{States: make(map[string]State, len(steps)), Causes: map[string]string{}, Holds: map[string]Hold{}}
	state := make([]State, len(steps))
	for i, s := range steps {
		state[i] = Pending
		res.States[s.ID] = Pending
	}
	emit := func(e Event) {
		res.States[e.Step] = e.State
		if e.Cause != "" {
			res.Causes[e.Step] = e.Cause
		}
		if e.State == Held {
			res.Holds[e.Step] = Hold{Needs: e.Needs, Root: e.Root}
		}
		if opts.OnEvent != nil {
			opts.OnEvent(e)
		}
	}

	// Transitions are collected and written in one transaction (one fsync)
	// per turn of the loop; their events are emitted, and the steps they
	// start are started, only once they are durable.
	var batch []store.StepRecord
	var events []Event
	var storeErr error
	started := make([]time.Time, len(steps)) // when each step began running
	note := func(i int, st State, attempts int, fp, cause string, h Hold) {
		rec := store.StepRecord{ID: steps[i].ID, State: string(st), Attempts: attempts, Error: cause, Needs: h.Needs, Root: h.Root}
		if st == Succeeded || st == Skipped {
			rec.Fingerprint = fp
		}
		if st == Running {
			started[i] = opts.Now()
			rec.Started = started[i]
		} else {
			// The final record replaces the running one: it keeps both times.
			rec.Started, rec.Finished = started[i], opts.Now()
		}
		batch = append(batch, rec)
		events = append(events, Event{Step: steps[i].ID, State: st, Attempt: attempts, Cause: cause, Needs: h.Needs, Root: h.Root})
	}
	flush := func() bool {
		if len(batch) == 0 || storeErr != nil {
			return storeErr == nil
		}
		if err := opts.Store.PutSteps(opts.RolloutID, batch); err != nil {
			storeErr = err
			return false
		}
		for _, e := range events {
			emit(e)
		}
		batch, events = batch[:0], events[:0]
		return true
	}

	var ready []int // in plan order
	for i := range steps {
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	done := make(chan outcome)
	running, halted := 0, ""

	// hold marks everything that transitively needs i as held, each naming
	// what it needs directly and, when that is held too, the failed step at
	// the root — never the root's error, which its own line carries.
	var hold func(i int, root string)
	hold = func(i int, root string) {
		for _, u := range users[i] {
			if state[u] != Pending {
				continue
			}
			state[u] = Held
			cause := fmt.Sprintf("needs %s (failed)", steps[i].ID)
			if steps[i].ID != root {
				cause = fmt.Sprintf("needs %s (held; %s failed)", steps[i].ID, root)
			}
			note(u, Held, 0, "", cause, Hold{Needs: steps[i].ID, Root: root})
			hold(u, root)
		}
	}
	fail := func(i int) {
		hold(i, steps[i].ID)
		if (steps[i].Halt || opts.FailFast) && halted == "" {
			halted = steps[i].ID
		}
	}
	finish := func(o outcome) {
		running--
		i := o.idx
		state[i] = o.state
		if o.err == nil {
			note(i, Succeeded, o.attempts, o.fp, "", Hold{})
			ready = release(i, users, waiting, ready, state)
			return
		}
		cause := fmt.Sprintf("%s failed: %v", steps[i].ID, o.err)
		if o.attempts > 1 {
			cause += fmt.Sprintf(" (after %d attempts)", o.attempts)
		}
		note(i, Failed, o.attempts, "", cause, Hold{})
		fail(i)
	}

	type start struct {
		i  int
		fp string
	}
	for {
		var starts []start
		for halted == "" && storeErr == nil && ctx.Err() == nil && running+len(starts) < opts.Parallel && len(ready) > 0 {
			i := ready[0]
			ready = ready[1:]
			if state[i] != Pending {
				continue
			}
			fp := ""
			if opts.Fingerprint != nil {
				var err error
				if fp, err = opts.Fingerprint(steps[i]); err != nil {
					state[i] = Failed
					c := fmt.Sprintf("%s failed: computing its inputs: %v", steps[i].ID, err)
					note(i, Failed, 0, "", c, Hold{})
					fail(i)
					continue
				}
				if !opts.Force && fp != "" {
					last, err := opts.Store.Fingerprint(steps[i].ID)
					if err != nil {
						storeErr = err
						break
					}
					if last == fp {
						state[i] = Skipped
						note(i, Skipped, 0, fp, "", Hold{})
						ready = release(i, users, waiting, ready, state)
						continue
					}
				}
			}
			state[i] = Running
			note(i, Running, 1, "", "", Hold{})
			starts = append(starts, start{i, fp})
		}
		// The transitions are written before the work starts.
		if !flush() {
			for _, st := range starts {
				state[st.i] = Pending
			}
			starts = nil
		}
		for _, st := range starts {
			running++
			go func(i int, fp string) {
				attempts, err := attempt(ctx, steps[i], run, opts)
				st := Succeeded
				if err != nil {
					st = Failed
				} else if steps[i].Refresh && opts.Fingerprint != nil {
					if after, ferr := opts.Fingerprint(steps[i]); ferr == nil {
						fp = after
					} else {
						fp = "" // unknown: the next rollout runs it again
					}
				}
				done <- outcome{idx: i, state: st, attempts: attempts, fp: fp, err: err}
			}(st.i, st.fp)
		}
		if running == 0 {
			break
		}
		finish(<-done)
		for more := true; more; {
			select {
			case o := <-done:
				finish(o)
			default:
				more = false
			}
		}
	}
	// What never started because the rollout halted (or could not record).
	for i := range steps {
		if state[i] == Pending {
			state[i] = Held
			c := "the rollout stopped before it could start"
			if halted != "" {
				c = fmt.Sprintf("the rollout stopped after %s failed", halted)
			}
			note(i, Held, 0, "", c, Hold{Root: halted})
		}
	}
	flush()
	res.OK = storeErr == nil
	for _, st := range state {
		res.OK = res.OK && (st == Succeeded || st == Skipped)
	}
	if storeErr != nil {
		return res, fmt.Errorf("recording the rollout's state: %w", storeErr)
	}
	return res, nil
}

// release counts step i as done for every step that needs it and returns
// ready with those that need nothing more, in plan order.
func release(i int, users [][]int, waiting []int, ready []int, state []State) []int {
	for _, u := range users[i] {
		if waiting[u]--; waiting[u] == 0 && state[u] == Pending {
			ready = insertSorted(ready, u)
		}
	}
	return ready
}

func insertSorted(xs []int, x int) []int {
	i := len(xs)
	for i > 0 && xs[i-1] > x {
		i--
	}
	xs = append(xs, 0)
	copy(xs[i+1:], xs[i:])
	xs[i] = x
	return xs
}

// attempt runs a step, retrying transient failures with exponential backoff
// and jitter (the delay times 0.5 to 1.5).
func attempt(ctx context.Context, step Step, run RunFunc, opts Options) (int, error) {
	delay := opts.RetryDelay
	for n := 1; ; n++ {
		err := run(ctx, step, n)
		if err == nil || n > opts.Retries || !IsTransient(err) || ctx.Err() != nil {
			return n, err
		}
		wait := time.Duration(float64(delay) * (0.5 + opts.Jitter()))
		select {
		case <-opts.After(wait):
		case <-ctx.Done():
			return n, ctx.Err()
		}
		delay *= 2
	}
}
