package steps

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

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
	// NixOptions are added to every evaluation and build: the host's Nix
	// configuration otherwise (its substituters, cache.nixos.org by
	// default); --no-substituters makes them `--option substituters ""`.
	NixOptions []string
	// GCRoots holds a garbage collector root per built system
	// (GCRoots/SERVICE/N); "" roots nothing. Keep is how many each service
	// keeps (0 = DefaultKeep); older ones are released.
	GCRoots string
	Keep    int
}

// DefaultKeep is how many built systems per service stay rooted.
const DefaultKeep = 5

// Closure builds the service's closure and publishes it; it returns the
// store path and the service's secrets, which only its agent receives.
func (b *Build) Closure(ctx context.Context, j *Job, svc *manifest.Service) (path string, secrets map[string][]byte, err error) {
	job, ok, err := b.jobOf(j, svc)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, fmt.Errorf("%s.closure is not set (and the manifest names no flake): there is nothing to deploy", svc.Path())
	}
	ev, err := j.evaluate(ctx, b, job)
	if err != nil {
		return "", nil, err
	}
	if ev.NixOS && !ev.Agent {
		return "", nil, fmt.Errorf("%s is a NixOS system without nixmox-agent: its agent would be removed by the switch; import nixmox's NixOS module (the flake's nixosModules.agent, or nixos-module/) into it and set services.nixmox-agent.enable = true", jobName(job))
	}
	if _, secrets, err = b.closureArgs(j, svc); err != nil {
		return "", nil, err
	}
	if err := b.realise(ctx, svc.Name, ev); err != nil {
		return "", nil, err
	}
	if ev.NixOS {
		if _, err := os.Stat(filepath.Join(ev.OutPath, "etc", "systemd", "system", "nixmox-agent.service")); err != nil {
			return "", nil, fmt.Errorf("%s was built without the nixmox-agent unit (%v): import nixmox's NixOS module and enable services.nixmox-agent", jobName(job), err)
		}
	}
	return ev.OutPath, secrets, b.Publish(ctx, ev.OutPath)
}

// realise builds an evaluated system and roots it under GCRoots/SERVICE,
// releasing the service's roots beyond the newest Keep.
func (b *Build) realise(ctx context.Context, service string, ev evaluated) error {
	args := []string{"--realise", ev.DrvPath}
	var root string
	if b.GCRoots != "" {
		dir := filepath.Join(b.GCRoots, service)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		roots, err := rootsOf(dir)
		if err != nil {
			return err
		}
		if n := len(roots); n > 0 {
			if target, _ := os.Readlink(filepath.Join(dir, strconv.Itoa(roots[n-1]))); target == ev.OutPath {
				root = "" // already the newest root
			} else {
				root = filepath.Join(dir, strconv.Itoa(roots[n-1]+1))
			}
		} else {
			root = filepath.Join(dir, "1")
		}
		if root != "" {
			args = append(args, "--add-root", root)
		}
	}
	if _, err := b.nix(ctx, "nix-store", args...); err != nil {
		return err
	}
	if root != "" {
		return b.prune(filepath.Dir(root))
	}
	return nil
}

// rootsOf lists the numbered roots in dir, oldest first.
func rootsOf(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ns []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	return ns, nil
}

// prune releases all but the newest Keep roots in dir.
func (b *Build) prune(dir string) error {
	keep := b.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	roots, err := rootsOf(dir)
	if err != nil {
		return err
	}
	for len(roots) > keep {
		if err := os.Remove(filepath.Join(dir, strconv.Itoa(roots[0]))); err != nil {
			return err
		}
		roots = roots[1:]
	}
	return nil
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

// hashClosure adds what a service's generation depends on: the system's
// derivation (which holds the rendered files and outputs it reads) and
// the digests of its secrets. The systems of a rollout are evaluated once,
// together, however many steps fingerprint them.
func (b *Build) hashClosure(ctx context.Context, h hash.Hash, j *Job, svc *manifest.Service) error {
	job, ok, err := b.jobOf(j, svc)
	if err != nil || !ok {
		return err
	}
	ev, err := j.evaluate(ctx, b, job)
	if err != nil {
		return err
	}
	_, secrets, err := b.closureArgs(j, svc)
	if err != nil {
		return err
	}
	h.Write([]byte(ev.DrvPath))
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		fmt.Fprintf(h, "secret %s %x\n", k, sha256.Sum256(secrets[k]))
	}
	return nil
}

// closureArgs is the nixmox argument a service's system is evaluated
// with: the JSON of {service, files, outputs, secrets} —
// the rendered files' directory, the service's Terraform outputs, and the
// names of its secrets (whose values reach only its agent, in
// $NIXMOX_SECRETS_DIR). It also returns the secrets' values.
func (b *Build) closureArgs(j *Job, svc *manifest.Service) (args string, secrets map[string][]byte, err error) {
	outputs := map[string]json.RawMessage{}
	secrets = map[string][]byte{}
	take := func(root string, o store.Output, as string) error {
		if !o.Sensitive {
			outputs[as] = o.Value
			return nil
		}
		if b.Secrets == nil {
			return nil
		}
		raw, err := b.Secrets.Open(root+"/"+o.Name, o.Sealed)
		if err != nil {
			return err
		}
		// A string output is delivered as its text, anything else as JSON.
		var text string
		if json.Unmarshal(raw, &text) == nil {
			raw = []byte(text)
		}
		secrets[as] = raw
		return nil
	}
	if !svc.Core {
		root := "terraform/services/" + svc.Name
		stored, err := b.Store.RootOutputs(root)
		if err != nil {
			return "", nil, err
		}
		for _, o := range stored.Outputs {
			if err := take(root, o, o.Name); err != nil {
				return "", nil, err
			}
		}
	}
	// The shared roots' outputs routed to this service (an OIDC client's
	// secret, an outpost's token, a core service's tf:infra outputs).
	for _, root := range []string{"terraform/infra", "terraform/auth-core"} {
		routes, err := j.outputRoutes(root)
		if err != nil {
			return "", nil, err
		}
		if len(routes) == 0 {
			continue
		}
		stored, err := b.Store.RootOutputs(root)
		if err != nil {
			return "", nil, err
		}
		for _, o := range stored.Outputs {
			for _, rt := range routes[o.Name] {
				if rt.Service != svc.Name {
					continue
				}
				if err := take(root, o, rt.As); err != nil {
					return "", nil, err
				}
			}
		}
	}
	data, err := json.Marshal(map[string]any{
		"service": svc.Name,
		"files":   j.Files,
		"outputs": outputs,
		"secrets": slices.Sorted(maps.Keys(secrets)),
	})
	if err != nil {
		return "", nil, err
	}
	return string(data), secrets, nil
}
