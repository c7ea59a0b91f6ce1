package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.key")
	k, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	sealed, err := k.Seal("web/token", []byte("s3cr3t"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("s3cr3t")) {
		t.Fatal("the sealed value contains the plaintext")
	}
	// The same key, loaded again, opens it.
	k2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k2.Open("web/token", sealed); err != nil || string(got) != "s3cr3t" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := k2.Open("other/token", sealed); err == nil {
		t.Error("a value sealed for one name opened for another")
	}
	other, _ := LoadOrCreate(filepath.Join(t.TempDir(), "other.key"))
	if _, err := other.Open("web/token", sealed); err == nil {
		t.Error("another key opened the value")
	}
}
