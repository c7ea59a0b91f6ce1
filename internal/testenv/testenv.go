// Package testenv is how a test says what it needs of the machine: a
// program on PATH, root. Outside CI a test whose need is not met is
// skipped, saying what it needs; under CI=true — where `make test` has
// installed every program and runs as root — it fails instead, so that a
// missing install step can never turn into a green run that tested less.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where nothing a test
// needs may be missing.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing fails the test under CI and skips it elsewhere, saying what it
// needs ("needs terraform on PATH").
func Missing(t testing.TB, need string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true, and this test %s: make test must provide it", need)
	}
	t.Skipf("%s (make test provides it)", need)
}

// RequireTool stops the test unless every program is on PATH (or, given as
// a path, exists): a failure under CI, a skip elsewhere.
func RequireTool(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			Missing(t, "needs "+p+" on PATH")
		}
	}
}

// RequireRoot stops the test unless it runs as root: a failure under CI
// (make test runs as root), a skip elsewhere.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root ("+why+")")
	}
}
