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
	"syscall"
	"time"
)

// run runs a Nix program and returns its stdout; a failure carries its
// stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	bin, err := exec.LookPath(name)
	if err != nil {
		return "", ErrNotInstalled
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
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
