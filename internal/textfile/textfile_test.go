package textfile_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/textfile"
)

func TestReadFromTheStart(t *testing.T) {
	want := strings.Repeat("0123456789abcdef", 10000) // past io.Copy's 32 KB buffer
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := textfile.Read(path); err != nil || got != want {
		t.Fatalf("Read: %d bytes, %v", len(got), err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if got, err := textfile.ReadFrom(f); err != nil || got != want {
		t.Fatalf("ReadFrom at the end: %d bytes, %v", len(got), err)
	}
	if _, err := textfile.Read(filepath.Join(t.TempDir(), "missing")); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}
