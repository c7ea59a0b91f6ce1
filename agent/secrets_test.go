package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSecrets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	if err := writeSecrets(dir, map[string][]byte{"token": []byte("a"), "old": []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if err := writeSecrets(dir, map[string][]byte{"token": []byte("c")}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token: %v %v", fi, err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "token")); string(data) != "c" {
		t.Errorf("token = %q", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "old")); !os.IsNotExist(err) {
		t.Errorf("a secret no longer sent survived: %v", err)
	}
	for _, bad := range []string{"../escape", ".hidden", "a/b", ""} {
		if err := writeSecrets(dir, map[string][]byte{bad: []byte("x")}); err == nil {
			t.Errorf("secret name %q accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !os.IsNotExist(err) {
		t.Error("a secret was written outside its directory")
	}
}
