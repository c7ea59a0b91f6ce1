package steps

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/store"
)

// Build builds services' closures with Nix and publishes them, signed,
// into the server's binary cache.
type Build struct {
	Store *store.Store
	// Secrets opens sealed outputs; nil hands closures no secrets.
	Secrets *seal.Key
	// CacheDir is the signed file binary cache agents pull from; "" hands
	// agents store paths they must already have.
	CacheDir string
	CacheKey nix.CacheKey
}

// Closure builds the service's closure and publishes it; it returns the
// store path and the service's secrets, which only its agent receives.
func (b *Build) Closure(ctx context.Context, j *Job, svc *manifest.Service) (path string, secrets map[string][]byte, err error) {
	if svc.Closure == "" {
		return "", nil, fmt.Errorf("%s.closure is not set: there is nothing to deploy", svc.Path())
	}
	args, secrets, err := b.closureArgs(j, svc)
	if err != nil {
		return "", nil, err
	}
	path, err = nixRun(ctx, "nix-build", append([]string{filepath.Join(j.Dir, svc.Closure), "--no-out-link"}, args...)...)
	if err != nil {
		return "", nil, err
	}
	return path, secrets, b.Publish(ctx, path)
}

// Publish copies a store path and its closure into the binary cache,
// signed with the server's key.
func (b *Build) Publish(ctx context.Context, path string) error {
	if b.CacheDir == "" {
		return nil
	}
	if err := (nix.Runner{}).CopyToCache(ctx, b.CacheDir, b.CacheKey, path); err != nil {
		return fmt.Errorf("publishing %s to the binary cache: %w", path, err)
	}
	return nil
}

// hashClosure adds what a service's generation depends on: the closure's
// derivation (which holds the rendered files and outputs it reads) and
// the digests of its secrets. Each closure is instantiated once per
// rollout, however many steps fingerprint it.
func (b *Build) hashClosure(ctx context.Context, h hash.Hash, j *Job, svc *manifest.Service) error {
	if svc.Closure == "" {
		return nil
	}
	args, secrets, err := b.closureArgs(j, svc)
	if err != nil {
		return err
	}
	drv, err := j.instantiate(ctx, append([]string{filepath.Join(j.Dir, svc.Closure)}, args...))
	if err != nil {
		return err
	}
	h.Write([]byte(drv))
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		fmt.Fprintf(h, "secret %s %x\n", k, sha256.Sum256(secrets[k]))
	}
	return nil
}

// closureArgs are the nix-build arguments a service's closure is built
// with: `--argstr nixmox JSON` of {service, files, outputs, secrets} —
// the rendered files' directory, the service's Terraform outputs, and the
// names of its secrets (whose values reach only its agent, in
// $NIXMOX_SECRETS_DIR). It also returns the secrets' values.
func (b *Build) closureArgs(j *Job, svc *manifest.Service) (args []string, secrets map[string][]byte, err error) {
	outputs := map[string]json.RawMessage{}
	secrets = map[string][]byte{}
	if !svc.Core {
		root := "terraform/services/" + svc.Name
		stored, err := b.Store.RootOutputs(root)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range stored.Outputs {
			if !o.Sensitive {
				outputs[o.Name] = o.Value
				continue
			}
			if b.Secrets == nil {
				continue
			}
			raw, err := b.Secrets.Open(root+"/"+o.Name, o.Sealed)
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
	data, err := json.Marshal(map[string]any{
		"service": svc.Name,
		"files":   j.Files,
		"outputs": outputs,
		"secrets": slices.Sorted(maps.Keys(secrets)),
	})
	if err != nil {
		return nil, nil, err
	}
	return []string{"--argstr", "nixmox", string(data)}, secrets, nil
}

// instantiate is nix-instantiate of args, once per rollout: a service's
// nix and verify steps both fingerprint its derivation.
func (j *Job) instantiate(ctx context.Context, args []string) (string, error) {
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

// nixRun runs a Nix command that builds or instantiates, with no
// substituters: the server talks to no binary cache but its own.
func nixRun(ctx context.Context, name string, args ...string) (string, error) {
	args = append(args, "--option", "substituters", "")
	cmd := exec.CommandContext(ctx, name, args...)
	nix.Supervise(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, nix.Stderr(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
