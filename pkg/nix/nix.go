// Package nix runs the Nix command-line tools that nixmox needs.
//
// It follows terraform-exec's pattern: exec.CommandContext with a Cancel
// signal and a WaitDelay, machine-readable output (--json) and, on failure,
// the program's own stderr in the error.
package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixmox/nixmox/internal/textfile"
)

// InstallHint tells a user without Nix how to get it.
const InstallHint = "nixmox evaluates .nix manifests with Nix, and nix-instantiate is not on PATH: install Nix (on Debian or Ubuntu: apt-get install nix-bin; elsewhere see https://nixos.org/download), or give a .json or .yaml manifest"

// ErrNotInstalled is returned when nix-instantiate cannot be found.
var ErrNotInstalled = errors.New(InstallHint)

// DefaultEvalTimeout bounds a manifest evaluation.
const DefaultEvalTimeout = 2 * time.Minute

// Runner runs Nix commands. The zero value uses nix-instantiate from PATH
// and DefaultEvalTimeout.
type Runner struct {
	// Instantiate is the nix-instantiate binary; "" looks it up on PATH.
	Instantiate string
	// EvalTimeout bounds EvalJSON; 0 means DefaultEvalTimeout.
	EvalTimeout time.Duration
	// Store is where CopyFrom copies to; "" is the default store.
	Store string
}

// EvalJSON evaluates the Nix file at path strictly and returns its value as
// JSON text (nix-instantiate --eval --strict --json). A failed evaluation
// returns an *EvalError carrying Nix's own message, which names the file
// and line.
func (r Runner) EvalJSON(ctx context.Context, path string) (string, error) {
	bin := r.Instantiate
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nix-instantiate"); err != nil {
			return "", ErrNotInstalled
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	timeout := r.EvalTimeout
	if timeout == 0 {
		timeout = DefaultEvalTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The path is absolute, so it can never be read as an option.
	cmd := exec.CommandContext(ctx, bin, "--eval", "--strict", "--json", abs)
	// Evaluation has no side effects to clean up, and Nix 2.8 does not
	// act on SIGINT while evaluating: ask with SIGTERM, kill after a second.
	Supervise(cmd)
	cmd.WaitDelay = time.Second
	// Nix writes the JSON into an in-memory file rather than a pipe: read
	// once it is complete, its size is known and it is copied into a string
	// once, where a pipe read into a growing buffer copies it again and
	// again (10,000 services: 130 ms less).
	stdout, err := outputFile()
	if err != nil {
		return "", err
	}
	defer stdout.Close()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return "", &EvalError{File: path, Message: fmt.Sprintf("evaluation did not finish within %s", timeout)}
		}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return "", &EvalError{File: path, Message: Stderr(stderr.String()), Err: err}
		}
		return "", fmt.Errorf("running %s: %w", bin, err)
	}
	out, err := textfile.ReadFrom(stdout)
	if err != nil {
		return "", fmt.Errorf("reading nix-instantiate's output: %w", err)
	}
	return out, nil
}

// EvalError is a Nix evaluation that failed.
type EvalError struct {
	File    string
	Message string // Nix's own error text
	Err     error
}

func (e *EvalError) Error() string {
	return fmt.Sprintf("%s: nix evaluation failed:\n%s", e.File, indent(e.Message))
}

func (e *EvalError) Unwrap() error { return e.Err }

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
