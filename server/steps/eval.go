package steps

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
)

//go:embed eval.nix
var evalExpr string

// evalJob is one system to evaluate, as eval.nix takes it.
type evalJob struct {
	File   string   `json:"file,omitempty"`
	Flake  string   `json:"flake,omitempty"`
	Attr   []string `json:"attr,omitempty"`
	Nixmox string   `json:"nixmox"`
}

// key identifies a job: the same system with the same facts is the same
// derivation.
func (e evalJob) key() string {
	data, _ := json.Marshal(e)
	return string(data)
}

// evaluated is what the evaluation says of one system.
type evaluated struct {
	DrvPath string `json:"drv"`
	OutPath string `json:"out"`
	NixOS   bool   `json:"nixos"`
	Agent   bool   `json:"agent"`
}

// evaluate returns the evaluation of svc's system with the given facts.
// The first call of a rollout evaluates the systems of all its services
// in one Nix invocation (as Colmena evaluates all hosts at once); a
// service whose facts changed since (its Terraform outputs, once its
// Terraform ran) is evaluated again on its own, and so is every service
// when the joint evaluation fails, so that an error is the service's own.
func (j *Job) evaluate(ctx context.Context, b *Build, job evalJob) (evaluated, error) {
	j.batch.Do(func() { j.evaluateAll(ctx, b) })
	key := job.key()
	j.mu.Lock()
	ev, ok := j.evals[key]
	j.mu.Unlock()
	if ok {
		return ev, nil
	}
	got, err := b.evalJobs(ctx, map[string]evalJob{"s": job})
	if err != nil {
		return evaluated{}, err
	}
	j.mu.Lock()
	j.evals[key] = got["s"]
	j.mu.Unlock()
	return got["s"], nil
}

// evaluateAll evaluates the systems of the rollout's services together.
func (j *Job) evaluateAll(ctx context.Context, b *Build) {
	j.mu.Lock()
	if j.evals == nil {
		j.evals = map[string]evaluated{}
	}
	j.mu.Unlock()
	names := j.Services
	if len(names) == 0 {
		for _, svc := range j.M.Enabled() {
			names = append(names, svc.Name)
		}
	}
	jobs := map[string]evalJob{}
	for _, name := range names {
		svc := j.M.Service(name)
		if svc == nil {
			continue
		}
		job, ok, err := b.jobOf(j, svc)
		if err != nil || !ok {
			continue // its own evaluation reports it
		}
		jobs[name] = job
	}
	if len(jobs) < 2 {
		return
	}
	got, err := b.evalJobs(ctx, jobs)
	if err != nil {
		return // each is evaluated on its own, with its own error
	}
	j.mu.Lock()
	for name, job := range jobs {
		j.evals[job.key()] = got[name]
	}
	j.mu.Unlock()
}

// jobOf is svc's system and the facts it is evaluated with.
func (b *Build) jobOf(j *Job, svc *manifest.Service) (evalJob, bool, error) {
	sys, ok, err := j.M.SystemOf(svc, j.Dir)
	if err != nil || !ok {
		return evalJob{}, ok, err
	}
	args, _, err := b.closureArgs(j, svc)
	if err != nil {
		return evalJob{}, false, err
	}
	return evalJob{File: sys.File, Flake: sys.Flake, Attr: sys.Attr, Nixmox: args}, true, nil
}

// evalJobs runs eval.nix over jobs in one nix-instantiate; it writes the
// derivations to the store (--read-write-mode) for the builds to come.
func (b *Build) evalJobs(ctx context.Context, jobs map[string]evalJob) (map[string]evaluated, error) {
	data, err := json.Marshal(jobs)
	if err != nil {
		return nil, err
	}
	// The expression is this program's own; what varies goes in as a JSON
	// file (owner-only: it names secrets, never their values), never into
	// the expression's text.
	f, err := os.CreateTemp("", "nixmox-eval-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, err
	}
	args := []string{"--extra-experimental-features", "nix-command flakes",
		"--eval", "--strict", "--json", "--read-write-mode", "-E", evalExpr, "--argstr", "jobsFile", f.Name()}
	out, err := b.nix(ctx, "nix-instantiate", args...)
	if err != nil {
		if len(jobs) == 1 {
			for _, job := range jobs {
				return nil, fmt.Errorf("evaluating %s: %w", jobName(job), err)
			}
		}
		return nil, err
	}
	var got map[string]evaluated
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		return nil, fmt.Errorf("reading the evaluation: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(jobs)) {
		if got[name].DrvPath == "" {
			return nil, fmt.Errorf("the evaluation returned no derivation for %s", name)
		}
	}
	return got, nil
}

func jobName(job evalJob) string {
	if job.File != "" {
		return job.File
	}
	return job.Flake + "#" + strings.Join(job.Attr, ".")
}

// nix runs a Nix program with the build's options (substituters) and
// returns its trimmed stdout; a failure carries Nix's stderr.
func (b *Build) nix(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, append(args, b.NixOptions...)...)
	nix.Supervise(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, nix.Stderr(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
