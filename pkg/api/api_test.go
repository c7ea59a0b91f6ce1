// Package api_test checks that the committed generated code matches
// proto/: a stale pkg/api fails the build's tests.
package api_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
)

func TestGeneratedCodeIsFresh(t *testing.T) {
	testenv.RequireTool(t, "buf", "protoc-gen-go", "protoc-gen-go-grpc")
	root := fixtures.Root()
	out := t.TempDir()
	cmd := exec.Command("buf", "generate", "--output", out)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, msg)
	}
	fresh, _ := filepath.Glob(filepath.Join(out, "pkg", "api", "nixmox", "v1", "*.go"))
	committed, _ := filepath.Glob(filepath.Join(root, "pkg", "api", "nixmox", "v1", "*.go"))
	if len(fresh) == 0 || len(fresh) != len(committed) {
		t.Fatalf("buf generated %d files, %d are committed: run make proto", len(fresh), len(committed))
	}
	for _, f := range fresh {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join(root, "pkg", "api", "nixmox", "v1", filepath.Base(f)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("pkg/api/nixmox/v1/%s is stale: run make proto", filepath.Base(f))
		}
	}
}

func TestLint(t *testing.T) {
	testenv.RequireTool(t, "buf")
	cmd := exec.Command("buf", "lint")
	cmd.Dir = fixtures.Root()
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf lint: %v\n%s", err, msg)
	}
}
