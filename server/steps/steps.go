// Package steps holds the step runners of a rollout: one per kind of step,
// each knowing what its step's result depends on (its fingerprint) and how
// to do it. The rollout controller plans and records; the executor
// (server/rollout) decides when a step runs; a runner does it:
//
//	tf:infra                       Containers  — the provider's containers, then the infra root
//	tf:auth-core, tf:service-*     Terraform   — a generated root through terraform-exec
//	nix:core:*, nix:service-config — Deploy    — Build (Nix build, signed into the cache),
//	                                             then Deliver (secrets and the desired
//	                                             generation to the service's agent)
//	verify:*                       Verify      — the agent's reports, confirmation
//	nix:* and verify:* of an exec service: Exec — its command, and checks from the server
//
// Runners reach agents only through the agents hub (Agents), containers
// only through a provider, Terraform only through an Applier.
package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/terraform"
)

// Runner runs one kind of step.
type Runner interface {
	// Fingerprint hashes what the step's result depends on; it is called
	// once everything the step needs has finished, and a step whose
	// fingerprint equals the one of its last success is skipped.
	Fingerprint(ctx context.Context, j *Job, s plan.Step) (string, error)
	// Run does the step's work; its error is the step's cause.
	Run(ctx context.Context, j *Job, s plan.Step) error
}

// Describer is a runner that can say what its step would change, for a
// dry run.
type Describer interface {
	// Describe names what would change ("" when it cannot tell).
	Describe(ctx context.Context, j *Job, s plan.Step) string
}

// Job is one rollout as the runners see it: the manifest, what was
// rendered from it, and what the rollout selected.
type Job struct {
	M   *manifest.Manifest
	G   *graph.Graph
	Dir string // the manifest's directory
	// Rollout names the rollout (its logs' directory).
	Rollout string
	// Tree is what was rendered for the rollout (nil without a work
	// directory); Files is where it was written, which closures read.
	Tree  render.Tree
	Files string
	// Services are the plan's services; All is set when the whole manifest
	// was selected.
	Services []string
	All      bool
	// NoRollback asks agents to leave an unhealthy generation in place.
	NoRollback bool
	// LogDir, if set, holds each step's tool output (STEP.log, owner-only).
	LogDir string

	mu     sync.Mutex
	batch  sync.Once
	evals  map[string]evaluated                       // the systems' evaluations, by job
	routes map[string]map[string][]render.OutputRoute // shared roots' output routes, by root
}

// StepLog opens the file a step's tool output goes to; done closes it.
// Without a log directory (or if it cannot be opened) the output is
// dropped: it is a record, and the step's error carries what matters.
func (j *Job) StepLog(stepID string) (log io.Writer, done func()) {
	if j.LogDir == "" {
		return io.Discard, func() {}
	}
	if err := os.MkdirAll(j.LogDir, 0o700); err != nil {
		return io.Discard, func() {}
	}
	f, err := os.OpenFile(filepath.Join(j.LogDir, terraform.Workspace(stepID)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return io.Discard, func() {}
	}
	return f, func() { _ = f.Close() }
}

// Set is the runners of a server, by the kind of step they run.
type Set struct {
	Containers *Containers
	Terraform  *Terraform
	Deploy     *Deploy
	Verify     *Verify
	Exec       *Exec
}

// For returns the runner of step s of j.
func (r *Set) For(j *Job, s plan.Step) (Runner, error) {
	switch s.Phase {
	case plan.TFInfra:
		return r.Containers, nil
	case plan.TFAuthCore, plan.TFServiceInfra, plan.TFServiceConfig:
		return r.Terraform, nil
	case plan.NixCore, plan.NixServiceConfig, plan.Verify:
		if svc := j.M.Service(s.Service); svc != nil && len(svc.Exec) > 0 {
			return r.Exec, nil
		}
		if s.Phase == plan.Verify {
			return r.Verify, nil
		}
		return r.Deploy, nil
	}
	return nil, fmt.Errorf("no runner for phase %s", s.Phase)
}

// newHash starts a step's fingerprint with its id.
func newHash(s plan.Step) hash.Hash {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", s.ID)
	return h
}

// hashManifest adds what a step reads of the manifest: the service's slice
// for a service's step, the decoded model (not the bytes: a manifest that
// only changed layout, or was stored and read back, is the same manifest)
// for one of the whole homelab.
func hashManifest(h io.Writer, j *Job, s plan.Step) error {
	var v any = j.M
	if s.Service != "" {
		v = j.M.Service(s.Service)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = h.Write(data)
	return err
}

func sum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

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

// outputRoutes reads which of a shared root's outputs go to which service
// (render.OutputRoutesFile in the rendered tree; none without a tree),
// once per job: every service's fingerprint and build asks.
func (j *Job) outputRoutes(root string) (map[string][]render.OutputRoute, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if routes, ok := j.routes[root]; ok {
		return routes, nil
	}
	var routes map[string][]render.OutputRoute
	if data, ok := j.Tree[root+"/"+render.OutputRoutesFile]; ok {
		if err := json.Unmarshal(data, &routes); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", root, render.OutputRoutesFile, err)
		}
	}
	if j.routes == nil {
		j.routes = map[string]map[string][]render.OutputRoute{}
	}
	j.routes[root] = routes
	return routes, nil
}

// rootFiles is a root's files from the rendered tree, by path relative to
// the root, without those of roots nested in it.
func (j *Job) rootFiles(root string) map[string][]byte {
	files := map[string][]byte{}
	for p, data := range j.Tree {
		rel, ok := strings.CutPrefix(p, root+"/")
		if !ok || (strings.HasPrefix(root, "terraform/services/") && strings.HasPrefix(rel, "config/")) {
			continue
		}
		files[rel] = data
	}
	return files
}
