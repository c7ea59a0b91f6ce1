package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// run runs a Nix program and returns its stdout; a failure carries its
// stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	bin, err := exec.LookPath(name)
	if err != nil {
		return "", ErrNotInstalled
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	Supervise(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, Stderr(stderr.String()))
	}
	return stdout.String(), nil
}

// CopyFrom copies a store path and its closure from a binary cache,
// accepting only paths signed by publicKey.
func (r Runner) CopyFrom(ctx context.Context, cacheURL, storePath, publicKey string) error {
	args := []string{"--extra-experimental-features", "nix-command",
		"copy", "--from", cacheURL,
		"--option", "require-sigs", "true",
		"--option", "trusted-public-keys", publicKey}
	if r.Store != "" {
		args = append(args, "--to", r.Store)
	}
	_, err := run(ctx, "nix", append(args, "--", storePath)...)
	return err
}

// Profile is a Nix profile: a symlink to the current generation, with one
// numbered link per generation beside it.
type Profile string

// Set makes storePath the profile's new generation and returns its number.
func (p Profile) Set(ctx context.Context, storePath string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(string(p)), 0o755); err != nil {
		return 0, err
	}
	if _, err := run(ctx, "nix-env", "--profile", string(p), "--set", storePath); err != nil {
		return 0, err
	}
	return p.Current()
}

// Current returns the current generation's number, 0 when there is none.
func (p Profile) Current() (int, error) {
	link, err := os.Readlink(string(p))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// <name>-<N>-link
	base := strings.TrimSuffix(filepath.Base(link), "-link")
	n, err := strconv.Atoi(base[strings.LastIndexByte(base, '-')+1:])
	if err != nil {
		return 0, fmt.Errorf("profile %s points at %s, not a generation", p, link)
	}
	return n, nil
}

// Path returns the store path of the current generation.
func (p Profile) Path() (string, error) {
	return filepath.EvalSymlinks(string(p))
}

// SwitchTo makes generation n current again (a rollback to a known
// generation).
func (p Profile) SwitchTo(ctx context.Context, n int) error {
	_, err := run(ctx, "nix-env", "--profile", string(p), "--switch-generation", strconv.Itoa(n))
	return err
}

// PathOf returns the store path of profile generation n.
func (p Profile) PathOf(n int) (string, error) {
	if n <= 0 {
		return "", fmt.Errorf("profile %s has no generation %d", p, n)
	}
	return filepath.EvalSymlinks(p.link(n))
}

// link is generation n's link: <profile>-<n>-link.
func (p Profile) link(n int) string { return fmt.Sprintf("%s-%d-link", p, n) }

// Delete deletes generation n, which is not the current one.
func (p Profile) Delete(ctx context.Context, n int) error {
	_, err := run(ctx, "nix-env", "--profile", string(p), "--delete-generations", strconv.Itoa(n))
	return err
}

// Remove deletes generation n even when it is the current one, leaving
// the profile without a current generation: what is left of a first
// generation that failed.
func (p Profile) Remove(ctx context.Context, n int) error {
	if cur, err := p.Current(); err == nil && cur == n {
		if err := os.Remove(string(p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(p.link(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// CacheKey is a binary cache signing key pair on disk.
type CacheKey struct {
	SecretFile string // readable by the server only
	Public     string // "name:base64", what agents trust
}

// LoadOrCreateCacheKey returns the signing key in dir, generating it (named
// name) the first time. The secret key file is 0600.
func LoadOrCreateCacheKey(ctx context.Context, dir, name string) (CacheKey, error) {
	sk, pk := filepath.Join(dir, "secret-key"), filepath.Join(dir, "public-key")
	if _, err := os.Stat(pk); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return CacheKey{}, err
		}
		if _, err := run(ctx, "nix-store", "--generate-binary-cache-key", name, sk, pk); err != nil {
			return CacheKey{}, err
		}
		if err := os.Chmod(sk, 0o600); err != nil {
			return CacheKey{}, err
		}
	}
	pub, err := os.ReadFile(pk)
	if err != nil {
		return CacheKey{}, err
	}
	return CacheKey{SecretFile: sk, Public: strings.TrimSpace(string(pub))}, nil
}

// CopyToCache copies a store path and its closure into the file binary
// cache at dir, signing it with key.
func (r Runner) CopyToCache(ctx context.Context, dir string, key CacheKey, storePath string) error {
	_, err := run(ctx, "nix", "--extra-experimental-features", "nix-command",
		"copy", "--to", "file://"+dir+"?compression=none&secret-key="+key.SecretFile, "--", storePath)
	return err
}

// StateDir is Nix's state directory (NIX_STATE_DIR, else /nix/var/nix),
// where its GC roots are.
func (r Runner) StateDir() string {
	if d := os.Getenv("NIX_STATE_DIR"); d != "" {
		return d
	}
	return "/nix/var/nix"
}
