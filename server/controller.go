package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/provider"
	"github.com/nixmox/nixmox/server/rollout"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/store"
	"github.com/nixmox/nixmox/server/terraform"
)

// Controller turns an applied manifest into a rollout: it plans it, runs
// the plan with the rollout executor, builds each service's closure and
// hands it to the service's agent, and verifies it through the agent's
// reports.
//
// Without a Provider, tf:infra makes no containers (they are expected to
// exist); without a Terraform runner, a step with Terraform work fails,
// saying so.
type Controller struct {
	Store  *store.Store
	Agents *AgentAPI
	Log    hclog.Logger
	// Provider makes the containers in tf:infra; nil means none.
	Provider provider.Provider
	// Terraform runs the generated root modules; nil means none.
	Terraform *terraform.Runner
	// WorkDir holds what rollouts generate: generated/ (the rendered files
	// closures read), terraform/ (each root's working directory) and logs/.
	WorkDir string
	// Secrets seals sensitive outputs in the store; nil refuses them.
	Secrets *seal.Key
	// Metrics, if set, counts rollouts and steps.
	Metrics *Metrics
	// ConfirmTimeout is sent to agents; 0 means 30 s.
	ConfirmTimeout time.Duration
	// CacheDir is the signed file binary cache closures are copied into and
	// agents pull from (with CacheKey.Public as the only trusted key); ""
	// hands agents store paths they must already have.
	CacheDir string
	CacheKey nix.CacheKey
	// CacheURL is where agents pull the cache from; "" means file://CacheDir.
	// With CachePort set instead, it is http:// on that port at whichever
	// address the agent reached the server by (a server listening on every
	// address, as for the local provider).
	CacheURL  string
	CachePort string

	mu      sync.Mutex
	pending map[string]*pendingGen // service -> generation handed to its agent
	turn    chan struct{}          // held by the running rollout
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
	holder, _ := c.Store.LockHolder()
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

// pendingGen is a generation waiting for its verify step.
type pendingGen struct {
	gen        int64
	noRollback bool // the agent leaves it in place when it fails
	reports    <-chan *nixmoxv1.StageReport
	cancel     func()
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
	j := &job{m: m, g: g, dir: dir, rollout: "dry-run", services: p.Services, all: len(req.GetSelection().GetServices()) == 0}
	if c.WorkDir != "" {
		// Rendered as a rollout would (module paths relative to the work
		// directory), written only to a temporary directory.
		if j.tree, err = render.Render(g, render.Options{ManifestDir: dir, OutDir: c.WorkDir}); err != nil {
			return false, err
		}
		tmp, err := os.MkdirTemp("", "nixmox-dry-run-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(tmp)
		j.files = filepath.Join(tmp, "generated")
		if err := render.Write(j.files, j.tree); err != nil {
			return false, err
		}
	}
	run, same := 0, 0
	for _, s := range p.Steps {
		fp, err := c.fingerprint(ctx, j, s)
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
			if s.Phase == plan.TFInfra && c.Provider != nil {
				// What the provider would change, container by container.
				if live, err := c.Provider.Observe(ctx, m, p.Services); err == nil {
					var changes []string
					for _, l := range strings.Split(strings.TrimSpace(live), "\n") {
						if l != "" && !strings.HasSuffix(l, ": []") && !strings.Contains(l, "agent=true") {
							changes = append(changes, l)
						}
					}
					if len(changes) > 0 {
						e.Message += ": " + strings.Join(changes, "; ")
					}
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
	j.services, j.all, j.noRollback = p.Services, len(r.Services) == 0, r.NoRollback

	var steps []rollout.Step
	phase := map[string]plan.Step{}
	for _, s := range p.Steps {
		phase[s.ID] = s
		halt := s.Phase == plan.TFInfra || s.Phase == plan.NixCore || s.Phase == plan.TFAuthCore ||
			(s.Phase == plan.Verify && m.Service(s.Service).Core)
		steps = append(steps, rollout.Step{ID: s.ID, Needs: s.Needs, Halt: halt,
			Refresh: s.Phase == plan.TFInfra && c.Provider != nil})
	}
	opts := rollout.Options{
		RolloutID: id, Store: c.Store, Parallel: r.Parallel, FailFast: r.FailFast, Force: r.Force,
		Retries: m.RetryAttempts, RetryDelay: time.Duration(m.RetryDelay) * time.Second,
		Fingerprint: func(st rollout.Step) (string, error) {
			return c.fingerprint(ctx, j, phase[st.ID])
		},
		OnEvent: func(e rollout.Event) {
			c.Metrics.stepEvent(e.Step, e.State, time.Now())
			log.Info("step", "step", e.Step, "state", e.State, "cause", e.Cause)
			emit(&nixmoxv1.RolloutEvent{RolloutId: id, Time: timestamppb.Now(), Step: e.Step, State: stateOf(e.State), Message: e.Cause,
				Needs: e.Needs, RootStep: e.Root})
		},
	}
	res, err := rollout.Execute(ctx, steps, func(ctx context.Context, st rollout.Step, attempt int) error {
		return c.run(ctx, j, phase[st.ID])
	}, opts)
	summary := summarize(res)
	r.Finished, r.OK, r.Summary = time.Now(), res.OK && err == nil, summary
	c.Metrics.rolloutDone(r.OK, r.Finished.Sub(r.Started))
	if rerr := c.Store.PutRollout(r); rerr != nil && err == nil {
		err = rerr
	}
	_, _ = c.Store.Audit(store.AuditEntry{Time: time.Now(), Who: who, What: "apply " + file, Result: summary, Rollout: id})
	log.Info("rollout finished", "ok", res.OK, "summary", summary)
	emit(&nixmoxv1.RolloutEvent{RolloutId: id, Time: timestamppb.Now(), Done: true, Ok: res.OK && err == nil, Message: summary})
	return res.OK && err == nil, err
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

// job is one rollout's manifest with what was rendered for it.
type job struct {
	m        *manifest.Manifest
	g        *graph.Graph
	dir      string // the manifest's directory
	rollout  string
	tree     render.Tree
	files    string   // where tree was written
	services []string // the plan's services
	all      bool     // the whole manifest was selected
	// noRollback asks agents to leave an unhealthy generation in place.
	noRollback bool

	mu   sync.Mutex
	drvs map[string]string // nix-instantiate's answer by its arguments
}

// instantiate is nix-instantiate of args, once per rollout: a service's
// nix and verify steps both fingerprint its derivation.
func (j *job) instantiate(ctx context.Context, args []string) (string, error) {
	key := strings.Join(args, "\x00")
	j.mu.Lock()
	drv, ok := j.drvs[key]
	j.mu.Unlock()
	if ok {
		return drv, nil
	}
	drv, err := nixRun(ctx, "nix-instantiate", args...)
	if err != nil {
		return "", err
	}
	j.mu.Lock()
	if j.drvs == nil {
		j.drvs = map[string]string{}
	}
	j.drvs[key] = drv
	j.mu.Unlock()
	return drv, nil
}

// prepare renders the manifest's files and writes them to
// WorkDir/generated, where closures read them.
func (c *Controller) prepare(m *manifest.Manifest, g *graph.Graph, file, rolloutID string) (*job, error) {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	j := &job{m: m, g: g, dir: dir, rollout: rolloutID}
	if c.WorkDir == "" {
		return j, nil
	}
	j.tree, err = render.Render(g, render.Options{ManifestDir: dir, OutDir: c.WorkDir})
	if err != nil {
		return nil, err
	}
	j.files = filepath.Join(c.WorkDir, "generated")
	if err := render.Write(j.files, j.tree); err != nil {
		return nil, fmt.Errorf("writing the generated files: %w", err)
	}
	return j, nil
}

// tfRoot is the generated root module a step applies, "" for none.
func tfRoot(s plan.Step) string {
	switch s.Phase {
	case plan.TFInfra:
		return "terraform/infra"
	case plan.TFAuthCore:
		return "terraform/auth-core"
	case plan.TFServiceInfra:
		return "terraform/services/" + s.Service
	case plan.TFServiceConfig:
		return "terraform/services/" + s.Service + "/config"
	}
	return ""
}

// rootFiles is a root's files from the rendered tree, by path relative to
// the root, without those of roots nested in it.
func (j *job) rootFiles(root string) map[string][]byte {
	files := map[string][]byte{}
	for p, data := range j.tree {
		rel, ok := strings.CutPrefix(p, root+"/")
		if !ok || (strings.HasPrefix(root, "terraform/services/") && strings.HasPrefix(rel, "config/")) {
			continue
		}
		files[rel] = data
	}
	return files
}

// fingerprint hashes what a step's result depends on: the service's slice
// of the manifest; for Terraform steps the root's files and its user
// modules' sources; for nix and verify steps the closure's derivation
// (which holds the rendered files and outputs it reads) and its secrets.
func (c *Controller) fingerprint(ctx context.Context, j *job, s plan.Step) (string, error) {
	m := j.m
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", s.ID)
	switch {
	case s.Phase == plan.TFInfra && j.tree != nil:
		// The network and the containers' specs as rendered, not the whole
		// manifest: a service's config is not infrastructure.
		data, err := json.Marshal(m.Network)
		if err != nil {
			return "", err
		}
		h.Write(data)
		for _, p := range j.tree.Paths() {
			if strings.HasPrefix(p, "containers/") {
				fmt.Fprintf(h, "file %s %d\n", p, len(j.tree[p]))
				h.Write(j.tree[p])
			}
		}
	case s.Phase == plan.TFAuthCore && j.tree != nil:
		// Its rendered root (below) holds all it reads of the manifest.
	case s.Service == "":
		// The decoded model, not the bytes: a manifest that only changed
		// layout (or was stored and read back) is the same manifest.
		data, err := json.Marshal(m)
		if err != nil {
			return "", err
		}
		h.Write(data)
	default:
		svc := m.Service(s.Service)
		data, err := json.Marshal(svc)
		if err != nil {
			return "", err
		}
		h.Write(data)
		if (s.Phase == plan.NixCore || s.Phase == plan.NixServiceConfig || s.Phase == plan.Verify) && svc.Closure != "" {
			args, secrets, err := c.closureArgs(j, svc)
			if err != nil {
				return "", err
			}
			drv, err := j.instantiate(ctx, append([]string{filepath.Join(j.dir, svc.Closure)}, args...))
			if err != nil {
				return "", err
			}
			h.Write([]byte(drv))
			for _, k := range slices.Sorted(maps.Keys(secrets)) {
				fmt.Fprintf(h, "secret %s %x\n", k, sha256.Sum256(secrets[k]))
			}
		}
	}
	if s.Phase == plan.TFInfra && c.Provider != nil {
		live, err := c.Provider.Observe(ctx, m, j.services)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "containers %s\n%s", c.Provider.Name(), live)
	}
	if root := tfRoot(s); root != "" && j.tree != nil {
		files := j.rootFiles(root)
		for _, p := range slices.Sorted(maps.Keys(files)) {
			fmt.Fprintf(h, "file %s %d\n", p, len(files[p]))
			h.Write(files[p])
		}
		if err := hashModules(h, j, s); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashModules adds the sources of the user modules a Terraform step calls.
func hashModules(h io.Writer, j *job, s plan.Step) error {
	var mods []string
	for _, svc := range j.m.Enabled() {
		tf := svc.Interface.Terraform
		if tf == nil || (s.Service != "" && svc.Name != s.Service) {
			continue
		}
		switch {
		case s.Phase == plan.TFInfra && svc.Core:
			mods = append(mods, tf.Modules...)
		case s.Phase == plan.TFServiceInfra:
			mods = append(mods, tf.Modules...)
		case s.Phase == plan.TFServiceConfig:
			mods = append(mods, tf.ConfigModules...)
		}
	}
	for _, mod := range mods {
		dir := mod
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(j.dir, mod)
		}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == ".terraform" {
					return filepath.SkipDir
				}
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "module %s %d\n", p, len(data))
			_, err = h.Write(data)
			return err
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// run does one step's work.
func (c *Controller) run(ctx context.Context, j *job, s plan.Step) error {
	m := j.m
	switch s.Phase {
	case plan.TFInfra:
		if c.Provider != nil {
			log, done := c.stepLog(j, s.ID)
			err := c.Provider.Ensure(ctx, m, j.services, j.all, c.enroll, log)
			done()
			if err != nil {
				return fmt.Errorf("%s provider: %w", c.Provider.Name(), err)
			}
		}
		if _, ok := j.tree["terraform/infra/main.tf.json"]; !ok {
			return nil
		}
		return c.applyTerraform(ctx, j, s)
	case plan.TFAuthCore, plan.TFServiceInfra, plan.TFServiceConfig:
		return c.applyTerraform(ctx, j, s)
	case plan.NixCore, plan.NixServiceConfig:
		return c.deploy(ctx, j, m.Service(s.Service))
	case plan.Verify:
		if svc := m.Service(s.Service); len(svc.Exec) > 0 {
			// No agent: the server checks it.
			return health.Prober{Dir: j.dir}.Verify(ctx, healthSpec(svc))
		}
		return c.verify(ctx, m, m.Service(s.Service))
	}
	return fmt.Errorf("no runner for phase %s", s.Phase)
}

var errNoTerraform = errors.New("this step needs Terraform, and this server has no Terraform runner")

// stepLog opens the file a step's tool output goes to,
// WorkDir/logs/ROLLOUT/STEP.log (owner-only); done closes it. Without a
// work directory (or if it cannot be opened) the output is dropped: it is
// a record, and the step's error carries what matters.
func (c *Controller) stepLog(j *job, stepID string) (log io.Writer, done func()) {
	if c.WorkDir == "" {
		return io.Discard, func() {}
	}
	dir := filepath.Join(c.WorkDir, "logs", j.rollout)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return io.Discard, func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, terraform.Workspace(stepID)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return io.Discard, func() {}
	}
	return f, func() { _ = f.Close() }
}

// applyTerraform applies the step's root and records its outputs,
// sensitive ones sealed.
func (c *Controller) applyTerraform(ctx context.Context, j *job, s plan.Step) error {
	if c.Terraform == nil || j.tree == nil {
		return errNoTerraform
	}
	root := tfRoot(s)
	work := filepath.Join(c.WorkDir, filepath.FromSlash(root))
	if err := terraform.Sync(work, j.rootFiles(root)); err != nil {
		return err
	}
	log, done := c.stepLog(j, s.ID)
	defer done()
	res, err := c.Terraform.Apply(ctx, work, terraform.Workspace(s.ID), log)
	if err != nil {
		return fmt.Errorf("terraform (%s): %w", root, err)
	}
	outs := store.Outputs{Root: root, Applied: time.Now()}
	for _, o := range res.Outputs {
		so := store.Output{Name: o.Name, Sensitive: o.Sensitive}
		if o.Sensitive {
			if c.Secrets == nil {
				return fmt.Errorf("output %s of %s is sensitive and this server has no secrets key", o.Name, root)
			}
			if so.Sealed, err = c.Secrets.Seal(root+"/"+o.Name, o.Value); err != nil {
				return err
			}
		} else {
			so.Value = o.Value
		}
		outs.Outputs = append(outs.Outputs, so)
	}
	return c.Store.PutOutputs(outs)
}

// closureArgs are the nix-build arguments a service's closure is built
// with: `--argstr nixmox JSON` of {service, files, outputs, secrets} —
// the rendered files' directory, the service's Terraform outputs, and the
// names of its secrets (whose values reach only its agent, in
// $NIXMOX_SECRETS_DIR). It also returns the secrets' values.
func (c *Controller) closureArgs(j *job, svc *manifest.Service) (args []string, secrets map[string][]byte, err error) {
	outputs := map[string]json.RawMessage{}
	secrets = map[string][]byte{}
	if !svc.Core {
		root := "terraform/services/" + svc.Name
		stored, err := c.Store.RootOutputs(root)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range stored.Outputs {
			if !o.Sensitive {
				outputs[o.Name] = o.Value
				continue
			}
			if c.Secrets == nil {
				continue
			}
			raw, err := c.Secrets.Open(root+"/"+o.Name, o.Sealed)
			if err != nil {
				return nil, nil, err
			}
			// A string output is delivered as its text, anything else as JSON.
			var text string
			if json.Unmarshal(raw, &text) == nil {
				raw = []byte(text)
			}
			secrets[o.Name] = raw
		}
	}
	arg := map[string]any{
		"service": svc.Name,
		"files":   j.files,
		"outputs": outputs,
		"secrets": slices.Sorted(maps.Keys(secrets)),
	}
	data, err := json.Marshal(arg)
	if err != nil {
		return nil, nil, err
	}
	return []string{"--argstr", "nixmox", string(data)}, secrets, nil
}

// runExec runs an exec service's command on the server's host: argv as
// given (no shell), in the manifest's directory, its output to the step's
// log, bounded by health_check_timeout.
func (c *Controller) runExec(ctx context.Context, j *job, svc *manifest.Service) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(j.m.HealthCheckTimeout)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, svc.Exec[0], svc.Exec[1:]...)
	cmd.Dir = j.dir
	cmd.Env = append(os.Environ(), "NIXMOX_SERVICE="+svc.Name, "NIXMOX_IP="+svc.IP,
		"NIXMOX_HOSTNAME="+svc.Hostname, "NIXMOX_FILES="+j.files)
	cmd.WaitDelay = time.Second
	var tail tailBuffer
	log, done := c.stepLog(j, "exec:"+svc.Name)
	defer done()
	cmd.Stdout = io.MultiWriter(log, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %ds", j.m.HealthCheckTimeout)
		}
		return fmt.Errorf("%s.exec %q: %w: %s", svc.Path(), svc.Exec[0], err, strings.TrimSpace(tail.String()))
	}
	return nil
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// healthSpec is a service's health checks with the manifest's defaults.
func healthSpec(svc *manifest.Service) health.Spec {
	h := svc.Interface.Health
	if h == nil {
		h = &manifest.Health{Interval: 30, Timeout: 60, Retries: 3}
	}
	return health.Spec{Startup: h.Startup, Liveness: h.Liveness, Readiness: h.Readiness,
		Interval: time.Duration(h.Interval) * time.Second, Timeout: time.Duration(h.Timeout) * time.Second,
		Retries: h.Retries, StartPeriod: time.Duration(h.StartPeriod) * time.Second}
}

// deploy builds the service's closure, records it as a new generation and
// hands it to the service's agent.
func (c *Controller) deploy(ctx context.Context, j *job, svc *manifest.Service) error {
	if len(svc.Exec) > 0 {
		return c.runExec(ctx, j, svc)
	}
	if svc.Closure == "" {
		return fmt.Errorf("%s.closure is not set: there is nothing to deploy", svc.Path())
	}
	args, secrets, err := c.closureArgs(j, svc)
	if err != nil {
		return err
	}
	out, err := nixRun(ctx, "nix-build", append([]string{filepath.Join(j.dir, svc.Closure), "--no-out-link"}, args...)...)
	if err != nil {
		return err
	}
	return c.handOver(ctx, j.m, svc, strings.TrimSpace(out), secrets, j.noRollback)
}

// handOver records path as the service's next generation and hands it to
// the service's agent; the service's verify step (or Rollback) waits for
// the outcome.
func (c *Controller) handOver(ctx context.Context, m *manifest.Manifest, svc *manifest.Service, path string, secrets map[string][]byte, noRollback bool) error {
	if c.CacheDir != "" {
		if err := (nix.Runner{}).CopyToCache(ctx, c.CacheDir, c.CacheKey, path); err != nil {
			return fmt.Errorf("publishing %s to the binary cache: %w", path, err)
		}
	}
	gens, err := c.Store.Generations(svc.Name)
	if err != nil {
		return err
	}
	gen := int64(len(gens)) + 1
	if n := len(gens); n > 0 {
		gen = gens[n-1].Number + 1
	}
	if err := c.Store.PutGeneration(svc.Name, store.Generation{Number: gen, StorePath: path, Created: time.Now()}); err != nil {
		return err
	}
	wait, cancelWait := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancelWait()
	if err := c.Agents.WaitConnected(wait, svc.Name); err != nil {
		return fmt.Errorf("the agent of %s did not connect within %ds", svc.Name, m.HealthCheckTimeout)
	}
	reports, cancel := c.Agents.Subscribe(svc.Name)
	c.mu.Lock()
	if c.pending == nil {
		c.pending = map[string]*pendingGen{}
	}
	if old := c.pending[svc.Name]; old != nil {
		old.cancel()
	}
	c.pending[svc.Name] = &pendingGen{gen: gen, reports: reports, cancel: cancel, noRollback: noRollback}
	c.mu.Unlock()
	// The secrets first: the agent writes them before it activates.
	if err := c.Agents.Send(ctx, svc.Name, &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Secrets{Secrets: &nixmoxv1.Secrets{Values: secrets}}}); err != nil {
		return err
	}
	return c.Agents.Send(ctx, svc.Name, c.desired(svc, gen, path, noRollback))
}

func (c *Controller) confirmTimeout() time.Duration {
	if c.ConfirmTimeout > 0 {
		return c.ConfirmTimeout
	}
	return 30 * time.Second
}

// desired is the message asking an agent to switch to a generation, pulled
// from the server's cache when there is one.
func (c *Controller) desired(svc *manifest.Service, gen int64, path string, noRollback bool) *nixmoxv1.ConnectResponse {
	cacheURL, key := "", ""
	if c.CacheDir != "" {
		cacheURL, key = "file://"+c.CacheDir, c.CacheKey.Public
		if c.CacheURL != "" {
			cacheURL = c.CacheURL
		} else if at, ok := c.Agents.ReachedAt(svc.Name).(*net.TCPAddr); ok && c.CachePort != "" {
			cacheURL = "http://" + net.JoinHostPort(at.IP.String(), c.CachePort)
		}
	}
	h := healthSpec(svc)
	return &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Desired{Desired: &nixmoxv1.DesiredGeneration{
		Generation: gen, StorePath: path, ConfirmTimeout: durationpb.New(c.confirmTimeout()),
		CacheUrl: cacheURL, CachePublicKey: key, NoRollback: noRollback,
		Health: &nixmoxv1.HealthSpec{
			Startup: h.Startup, Liveness: h.Liveness, Readiness: h.Readiness,
			Interval: durationpb.New(h.Interval), Timeout: durationpb.New(h.Timeout),
			Retries: int32(h.Retries), StartPeriod: durationpb.New(h.StartPeriod),
		},
	}}}
}

// verify waits for the agent to report the pending generation healthy,
// confirms it, and waits for the confirmation to be acknowledged. An agent
// that fails the generation has already rolled it back; its report is the
// cause.
func (c *Controller) verify(ctx context.Context, m *manifest.Manifest, svc *manifest.Service) error {
	c.mu.Lock()
	p := c.pending[svc.Name]
	delete(c.pending, svc.Name)
	c.mu.Unlock()
	if p == nil {
		var err error
		if p, err = c.reattach(ctx, m, svc); p == nil || err != nil {
			return err
		}
	}
	defer p.cancel()
	wait, cancel := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancel()
	var failure string
	for {
		select {
		case r := <-p.reports:
			if r.GetGeneration() != p.gen {
				continue
			}
			switch r.GetStage() {
			case nixmoxv1.Stage_STAGE_HEALTHY:
				if err := c.Agents.Send(ctx, svc.Name, &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Confirm{Confirm: &nixmoxv1.Confirm{Generation: p.gen}}}); err != nil {
					return err
				}
			case nixmoxv1.Stage_STAGE_CONFIRMED:
				return c.markHealthy(svc.Name, p.gen)
			case nixmoxv1.Stage_STAGE_FAILED:
				failure = r.GetLog()
				if p.noRollback {
					return fmt.Errorf("%s: %s", svc.Name, failure)
				}
			case nixmoxv1.Stage_STAGE_ROLLED_BACK:
				return fmt.Errorf("the agent rolled %s back: %s", svc.Name, failure)
			}
		case <-wait.Done():
			if failure != "" {
				return fmt.Errorf("%s: %s", svc.Name, failure)
			}
			return fmt.Errorf("%s did not report generation %d healthy within %ds", svc.Name, p.gen, m.HealthCheckTimeout)
		}
	}
}

// reattach finds where the service's latest generation stands when the
// verify step has nothing pending: its nix step was unchanged, or ran
// before the server restarted. It returns nil when there is nothing to
// wait for, and otherwise a subscription to wait on, having confirmed the
// generation or asked the agent for it again as needed.
func (c *Controller) reattach(ctx context.Context, m *manifest.Manifest, svc *manifest.Service) (*pendingGen, error) {
	gens, err := c.Store.Generations(svc.Name)
	if err != nil || len(gens) == 0 {
		return nil, err // nothing was ever deployed by this server: nothing to verify
	}
	last := gens[len(gens)-1]
	if last.Healthy {
		return nil, nil
	}
	wait, cancelWait := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancelWait()
	if err := c.Agents.WaitConnected(wait, svc.Name); err != nil {
		return nil, fmt.Errorf("the agent of %s did not reconnect within %ds", svc.Name, m.HealthCheckTimeout)
	}
	reports, cancel := c.Agents.Subscribe(svc.Name)
	p := &pendingGen{gen: last.Number, reports: reports, cancel: cancel}
	hello, _ := c.Agents.Hello(svc.Name)
	switch {
	case hello.GetActiveGeneration() == last.Number:
		cancel()
		return nil, c.markHealthy(svc.Name, last.Number)
	case hello.GetApplying() == last.Number && hello.GetApplyingHealthy():
		err = c.Agents.Send(ctx, svc.Name, &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Confirm{Confirm: &nixmoxv1.Confirm{Generation: last.Number}}})
	case hello.GetFailedGeneration() == last.Number && hello.GetApplying() != last.Number:
		cancel()
		return nil, fmt.Errorf("the agent of %s failed generation %d: %s", svc.Name, last.Number, hello.GetFailure())
	case hello.GetApplying() == last.Number:
		// Still checking it: its reports will come.
		c.Log.Info("waiting for the agent to finish checking", "service", svc.Name, "generation", last.Number)
	default:
		// The agent rolled it back (or never got it): ask again.
		err = c.Agents.Send(ctx, svc.Name, c.desired(svc, last.Number, last.StorePath, false))
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

func (c *Controller) markHealthy(service string, gen int64) error {
	gens, err := c.Store.Generations(service)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g.Number == gen {
			g.Healthy = true
			return c.Store.PutGeneration(service, g)
		}
	}
	return nil
}

// nixRun runs a Nix command that builds or instantiates, with no
// substituters: the server talks to no binary cache but its own.
func nixRun(ctx context.Context, name string, args ...string) (string, error) {
	args = append(args, "--option", "substituters", "")
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, nix.BuildStderr(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// Rollback sets a service back to an earlier generation's closure: to, or
// the last healthy generation before the newest healthy one. It is deployed
// as a new generation and verified like any other; it takes the rollout
// turn, so it never runs beside a rollout.
func (c *Controller) Rollback(ctx context.Context, service string, to int64, who string, emit func(*nixmoxv1.RolloutEvent)) error {
	release, err := c.acquire(ctx, false, emit)
	if err != nil {
		return err
	}
	defer release()
	sm, err := c.Store.Manifest(0)
	if err != nil {
		return fmt.Errorf("no manifest has been applied: %w", err)
	}
	m, err := manifest.Parse(sm.JSON, manifest.FormatJSON, sm.File)
	if err != nil {
		return err
	}
	svc := m.Service(service)
	if svc == nil {
		return fmt.Errorf("%q is not an enabled service of the applied manifest", service)
	}
	gens, err := c.Store.Generations(service)
	if err != nil {
		return err
	}
	var target *store.Generation
	newestHealthy := -1
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		switch {
		case to > 0 && g.Number == to:
			target = &gens[i]
		case to == 0 && g.Healthy && newestHealthy == -1:
			newestHealthy = i
		case to == 0 && g.Healthy && target == nil:
			target = &gens[i]
		}
	}
	if target == nil {
		if to > 0 {
			return fmt.Errorf("%s has no generation %d", service, to)
		}
		return fmt.Errorf("%s has no healthy generation before its current one", service)
	}
	step := "rollback:" + service
	say := func(st nixmoxv1.StepState, msg string) {
		e := &nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Step: step, State: st, Message: msg}
		emit(e)
		c.broadcast(e)
	}
	say(nixmoxv1.StepState_STEP_STATE_RUNNING, fmt.Sprintf("back to the closure of generation %d", target.Number))
	var secrets map[string][]byte
	_, secrets, err = c.closureArgs(&job{m: m, files: filepath.Join(c.WorkDir, "generated")}, svc)
	if err == nil {
		err = c.handOver(ctx, m, svc, target.StorePath, secrets, false)
	}
	if err == nil {
		err = c.verify(ctx, m, svc)
	}
	result := "ok"
	if err != nil {
		result = err.Error()
		say(nixmoxv1.StepState_STEP_STATE_FAILED, err.Error())
	} else {
		say(nixmoxv1.StepState_STEP_STATE_SUCCEEDED, "")
	}
	_, _ = c.Store.Audit(store.AuditEntry{Time: time.Now(), Who: who, What: fmt.Sprintf("rollback %s to generation %d", service, target.Number), Result: result})
	return err
}

// enroll issues a one-time token for a new container's agent and returns
// its enroll file (the token and the CA).
func (c *Controller) enroll(_ context.Context, service string) ([]byte, error) {
	token, err := issueToken(c.Store, service, time.Hour, "provider", time.Now())
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"token": token, "ca_pem": string(c.Agents.CA.PEM)})
}
