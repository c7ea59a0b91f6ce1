package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/rollout"
	"github.com/nixmox/nixmox/server/steps"
	"github.com/nixmox/nixmox/server/store"
)

// Controller runs rollouts: one at a time (the lock, and a queue for
// `apply --wait`), from a manifest to a plan to the executor, recording
// every rollout and broadcasting its events to watchers; apply, dry run,
// resume after a restart, and rollback. It knows nothing of Terraform, Nix
// or agents: each step is done by its runner (server/steps).
type Controller struct {
	Store *store.Store
	Log   hclog.Logger
	// Steps are the runners of each kind of step.
	Steps *steps.Set
	// WorkDir holds what rollouts generate: generated/ (the rendered files
	// closures read) and logs/ (each step's tool output); "" renders
	// nothing.
	WorkDir string
	// Metrics, if set, counts rollouts and steps.
	Metrics *Metrics
	// Recorded, if set, is called once a rollout or rollback is recorded
	// (the server backs its state up then).
	Recorded func()

	mu      sync.Mutex
	turn    chan struct{} // held by the running rollout
	running string        // what holds the turn: a rollout id, or rollback:SERVICE
	// watchers receive every rollout event (Watch).
	watchers map[chan *nixmoxv1.RolloutEvent]struct{}
}

// Watch delivers every rollout event from now on until cancel is called;
// events are dropped for a watcher that falls 256 behind.
func (c *Controller) Watch() (events <-chan *nixmoxv1.RolloutEvent, cancel func()) {
	ch := make(chan *nixmoxv1.RolloutEvent, 256)
	c.mu.Lock()
	if c.watchers == nil {
		c.watchers = map[chan *nixmoxv1.RolloutEvent]struct{}{}
	}
	c.watchers[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.watchers, ch)
		c.mu.Unlock()
	}
}

func (c *Controller) broadcast(e *nixmoxv1.RolloutEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.watchers {
		select {
		case ch <- e:
		default:
		}
	}
}

// acquire takes the turn to run a rollout: at once, or — with wait — once
// the running one is done. Without wait, a running rollout makes it fail
// naming that rollout.
func (c *Controller) acquire(ctx context.Context, wait bool, emit func(*nixmoxv1.RolloutEvent)) (release func(), err error) {
	c.mu.Lock()
	if c.turn == nil {
		c.turn = make(chan struct{}, 1)
	}
	turn := c.turn
	c.mu.Unlock()
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	default:
	}
	holder := c.Running()
	if !wait {
		return nil, &store.LockedError{Holder: holder}
	}
	emit(&nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Message: "queued behind rollout " + holder})
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Running names what this server is running now — a rollout's id, or
// rollback:SERVICE — or "" when it runs nothing.
func (c *Controller) Running() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.turn == nil || len(c.turn) == 0 {
		return ""
	}
	return c.running
}

// setRunning records what holds the turn (under it).
func (c *Controller) setRunning(what string) {
	c.mu.Lock()
	c.running = what
	c.mu.Unlock()
}

// Apply runs the manifest's rollout and emits its events; ok is set when
// every selected step succeeded or was unchanged.
func (c *Controller) Apply(ctx context.Context, req *nixmoxv1.ApplyRequest, who string, emit func(*nixmoxv1.RolloutEvent)) (ok bool, err error) {
	m, err := manifest.Parse(req.GetManifestJson(), manifest.FormatJSON, req.GetManifestFile())
	if m != nil {
		g, gerr := graph.New(m)
		if err = manifest.Join(req.GetManifestFile(), err, gerr); err == nil {
			if req.GetDryRun() {
				return c.dryRun(ctx, req, m, g, emit)
			}
			return c.apply(ctx, req, who, m, g, emit)
		}
	}
	return false, err
}

func (c *Controller) apply(ctx context.Context, req *nixmoxv1.ApplyRequest, who string, m *manifest.Manifest, g *graph.Graph, emit func(*nixmoxv1.RolloutEvent)) (bool, error) {
	release, err := c.acquire(ctx, req.GetWait(), emit)
	if err != nil {
		return false, err
	}
	defer release()
	now := time.Now()
	id := store.NewRolloutID(now)
	if err := c.Store.Lock(id); err != nil {
		return false, err
	}
	version, err := c.Store.PutManifest(req.GetManifestFile(), req.GetManifestJson(), now)
	if err != nil {
		c.Store.Unlock(id)
		return false, err
	}
	r := store.Rollout{ID: id, Manifest: version, Who: who, Started: now, Services: req.GetSelection().GetServices(),
		Parallel: int(req.GetParallel()), FailFast: req.GetFailFast(), Force: req.GetForce(), NoRollback: req.GetNoRollback()}
	if err := c.Store.PutRollout(r); err != nil {
		c.Store.Unlock(id)
		return false, err
	}
	return c.execute(ctx, r, m, g, req.GetManifestFile(), emit)
}

// dryRun reports, step by step, whether a rollout of the manifest would run
// the step (its fingerprint differs from its last success, or --force) or
// skip it, and changes nothing: no lock, no rollout record, nothing
// written but a temporary copy of the rendered files. A step whose inputs
// depend on outputs of a step that would run is judged by today's outputs.
func (c *Controller) dryRun(ctx context.Context, req *nixmoxv1.ApplyRequest, m *manifest.Manifest, g *graph.Graph, emit func(*nixmoxv1.RolloutEvent)) (bool, error) {
	p, err := plan.New(g, plan.Options{Services: req.GetSelection().GetServices()})
	if err != nil {
		return false, err
	}
	dir, err := filepath.Abs(filepath.Dir(req.GetManifestFile()))
	if err != nil {
		return false, err
	}
	j := &steps.Job{M: m, G: g, Dir: dir, Rollout: "dry-run", Services: p.Services, All: len(req.GetSelection().GetServices()) == 0}
	if c.WorkDir != "" {
		// Rendered as a rollout would (module paths relative to the work
		// directory), written only to a temporary directory.
		if j.Tree, err = render.Render(g, render.Options{ManifestDir: dir, OutDir: c.WorkDir}); err != nil {
			return false, err
		}
		tmp, err := os.MkdirTemp("", "nixmox-dry-run-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(tmp)
		j.Files = filepath.Join(tmp, "generated")
		if err := render.Write(j.Files, j.Tree); err != nil {
			return false, err
		}
	}
	run, same := 0, 0
	for _, s := range p.Steps {
		runner, err := c.Steps.For(j, s)
		if err != nil {
			return false, err
		}
		fp, err := runner.Fingerprint(ctx, j, s)
		if err != nil {
			return false, fmt.Errorf("%s: %w", s.ID, err)
		}
		last, err := c.Store.Fingerprint(s.ID)
		if err != nil {
			return false, err
		}
		e := &nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Step: s.ID}
		if req.GetForce() || fp == "" || fp != last {
			e.State, e.Message = nixmoxv1.StepState_STEP_STATE_PENDING, "would run"
			if d, ok := runner.(steps.Describer); ok {
				if what := d.Describe(ctx, j, s); what != "" {
					e.Message += ": " + what
				}
			}
			run++
		} else {
			e.State = nixmoxv1.StepState_STEP_STATE_SKIPPED
			same++
		}
		emit(e)
	}
	emit(&nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Done: true, Ok: true,
		Message: fmt.Sprintf("dry run: %d would run, %d unchanged; nothing was changed", run, same)})
	return true, nil
}

// Resume continues a rollout that a server stopped (or killed) while it ran:
// the one holding the lock without having finished. Steps that succeeded are
// skipped by their fingerprints; a generation an agent was still checking is
// confirmed or awaited, not deployed again.
func (c *Controller) Resume(ctx context.Context) error {
	id, err := c.Store.LockHolder()
	if err != nil || id == "" {
		return err
	}
	r, err := c.Store.Rollout(id)
	if err != nil {
		return fmt.Errorf("resuming %s: %w", id, err)
	}
	if !r.Finished.IsZero() {
		// Killed between recording the end and releasing the lock.
		c.Log.Info("rollout already finished; releasing its lock", "rollout", id, "ok", r.OK)
		return c.Store.Unlock(id)
	}
	sm, err := c.Store.Manifest(r.Manifest)
	if err != nil {
		return fmt.Errorf("resuming %s: %w", id, err)
	}
	m, err := manifest.Parse(sm.JSON, manifest.FormatJSON, sm.File)
	if err != nil {
		return fmt.Errorf("resuming %s: %w", id, err)
	}
	g, err := graph.New(m)
	if err != nil {
		return fmt.Errorf("resuming %s: %w", id, err)
	}
	release, err := c.acquire(ctx, true, func(*nixmoxv1.RolloutEvent) {})
	if err != nil {
		return err
	}
	defer release()
	c.Log.Info("resuming rollout", "rollout", id)
	_, err = c.execute(ctx, r, m, g, sm.File, func(*nixmoxv1.RolloutEvent) {})
	return err
}

// execute runs a stored rollout to its end and releases its lock.
func (c *Controller) execute(ctx context.Context, r store.Rollout, m *manifest.Manifest, g *graph.Graph, file string, emitTo func(*nixmoxv1.RolloutEvent)) (bool, error) {
	emit := func(e *nixmoxv1.RolloutEvent) {
		emitTo(e)
		c.broadcast(e)
	}
	id, who := r.ID, r.Who
	c.setRunning(id)
	defer c.Store.Unlock(id)
	p, err := plan.New(g, plan.Options{Services: r.Services})
	if err != nil {
		return false, err
	}
	log := c.Log.With("rollout", id)
	log.Info("rollout started", "manifest", file, "steps", len(p.Steps))
	j, err := c.prepare(m, g, file, id)
	if err != nil {
		return false, err
	}
	j.Services, j.All, j.NoRollback = p.Services, len(r.Services) == 0, r.NoRollback

	var toRun []rollout.Step
	phase := map[string]plan.Step{}
	runners := map[string]steps.Runner{}
	for _, s := range p.Steps {
		phase[s.ID] = s
		if runners[s.ID], err = c.Steps.For(j, s); err != nil {
			return false, err
		}
		halt := s.Phase == plan.TFInfra || s.Phase == plan.NixCore || s.Phase == plan.TFAuthCore ||
			(s.Phase == plan.Verify && m.Service(s.Service).Core)
		// A step whose inputs include live state it repairs (the
		// containers) is fingerprinted again once it succeeded.
		refresh := false
		if r, ok := runners[s.ID].(interface{ Refreshes() bool }); ok {
			refresh = r.Refreshes()
		}
		toRun = append(toRun, rollout.Step{ID: s.ID, Needs: s.Needs, Halt: halt, Refresh: refresh})
	}
	opts := rollout.Options{
		RolloutID: id, Store: c.Store, Parallel: r.Parallel, FailFast: r.FailFast, Force: r.Force,
		Retries: m.RetryAttempts, RetryDelay: time.Duration(m.RetryDelay) * time.Second,
		Fingerprint: func(st rollout.Step) (string, error) {
			return runners[st.ID].Fingerprint(ctx, j, phase[st.ID])
		},
		OnEvent: func(e rollout.Event) {
			c.Metrics.stepEvent(e.Step, e.State, time.Now())
			log.Info("step", "step", e.Step, "state", e.State, "cause", e.Cause)
			emit(&nixmoxv1.RolloutEvent{RolloutId: id, Time: timestamppb.Now(), Step: e.Step, State: stateOf(e.State), Message: e.Cause,
				Needs: e.Needs, RootStep: e.Root})
		},
	}
	res, err := rollout.Execute(ctx, toRun, func(ctx context.Context, st rollout.Step, attempt int) error {
		return runners[st.ID].Run(ctx, j, phase[st.ID])
	}, opts)
	summary := summarize(res)
	r.Finished, r.OK, r.Summary = time.Now(), res.OK && err == nil, summary
	c.Metrics.rolloutDone(r.OK, r.Finished.Sub(r.Started))
	if rerr := c.Store.PutRollout(r); rerr != nil && err == nil {
		err = rerr
	}
	_, _ = c.Store.Audit(store.AuditEntry{Time: time.Now(), Who: who, What: "apply " + file, Result: summary, Rollout: id})
	c.recorded()
	log.Info("rollout finished", "ok", res.OK, "summary", summary)
	emit(&nixmoxv1.RolloutEvent{RolloutId: id, Time: timestamppb.Now(), Done: true, Ok: res.OK && err == nil, Message: summary})
	return res.OK && err == nil, err
}

func (c *Controller) recorded() {
	if c.Recorded != nil {
		c.Recorded()
	}
}

// summarize counts the steps' states and names the failed ones: "3
// succeeded, 2 unchanged, 1 failed (nix:core:dns), 9 held".
func summarize(res rollout.Result) string {
	counts := map[rollout.State]int{}
	var failed []string
	for id, st := range res.States {
		counts[st]++
		if st == rollout.Failed {
			failed = append(failed, id)
		}
	}
	slices.Sort(failed)
	var parts []string
	for _, st := range []rollout.State{rollout.Succeeded, rollout.Skipped, rollout.Failed, rollout.Held} {
		if n := counts[st]; n > 0 {
			part := fmt.Sprintf("%d %s", n, api.StepWord(stateOf(st)))
			if st == rollout.Failed {
				part += " (" + strings.Join(failed, ", ") + ")"
			}
			parts = append(parts, part)
		}
	}
	return strings.Join(parts, ", ")
}

func stateOf(s rollout.State) nixmoxv1.StepState {
	switch s {
	case rollout.Pending:
		return nixmoxv1.StepState_STEP_STATE_PENDING
	case rollout.Running:
		return nixmoxv1.StepState_STEP_STATE_RUNNING
	case rollout.Succeeded:
		return nixmoxv1.StepState_STEP_STATE_SUCCEEDED
	case rollout.Skipped:
		return nixmoxv1.StepState_STEP_STATE_SKIPPED
	case rollout.Failed:
		return nixmoxv1.StepState_STEP_STATE_FAILED
	case rollout.Held:
		return nixmoxv1.StepState_STEP_STATE_HELD
	}
	return nixmoxv1.StepState_STEP_STATE_UNSPECIFIED
}

// prepare renders the manifest's files and writes them to
// WorkDir/generated, where closures read them.
func (c *Controller) prepare(m *manifest.Manifest, g *graph.Graph, file, rolloutID string) (*steps.Job, error) {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	j := &steps.Job{M: m, G: g, Dir: dir, Rollout: rolloutID}
	if c.WorkDir == "" {
		return j, nil
	}
	j.LogDir = filepath.Join(c.WorkDir, "logs", rolloutID)
	j.Tree, err = render.Render(g, render.Options{ManifestDir: dir, OutDir: c.WorkDir})
	if err != nil {
		return nil, err
	}
	j.Files = filepath.Join(c.WorkDir, "generated")
	if err := render.Write(j.Files, j.Tree); err != nil {
		return nil, fmt.Errorf("writing the generated files: %w", err)
	}
	return j, nil
}
