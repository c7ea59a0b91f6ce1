package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
)

// TestDocsUpToDate fails when docs/ differs from what `make docs` writes.
func TestDocsUpToDate(t *testing.T) {
	files, err := Docs()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(fixtures.Root(), "docs")
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/%s is stale: run make docs", rel)
		}
	}
	committed, _ := filepath.Glob(filepath.Join(dir, "cli", "*.md"))
	for _, f := range committed {
		rel, _ := filepath.Rel(dir, f)
		if _, ok := files[rel]; !ok {
			t.Errorf("docs/%s documents no command: run make docs", rel)
		}
	}
}
