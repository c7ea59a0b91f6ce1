package nix_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/nix"
)

func write(t *testing.T, src string) string {
	t.Helper()
	testenv.RequireTool(t, "nix-instantiate")
	f := filepath.Join(t.TempDir(), "m.nix")
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestEvalJSON(t *testing.T) {
	f := write(t, `let x = 20; in { a = x + 22; b = [ "s" null true ]; }`)
	out, err := nix.Runner{}.EvalJSON(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), `{"a":42,"b":["s",null,true]}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestEvalJSONLarge: output far larger than a pipe's buffer arrives whole.
func TestEvalJSONLarge(t *testing.T) {
	f := write(t, `builtins.genList (i: "item-${toString i}") 100000`)
	out, err := nix.Runner{}.EvalJSON(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%d bytes of output: %v", len(out), err)
	}
	if len(got) != 100000 || got[0] != "item-0" || got[99999] != "item-99999" {
		t.Fatalf("got %d items, first %q", len(got), got[:1])
	}
}

// TestEvalTimeout: an evaluation that runs past EvalTimeout is stopped and
// reported as such.
func TestEvalTimeout(t *testing.T) {
	f := write(t, `builtins.foldl' (a: b: a + b) 0 (builtins.genList (x: x) 1000000000)`)
	_, err := nix.Runner{EvalTimeout: 300 * time.Millisecond}.EvalJSON(context.Background(), f)
	var ee *nix.EvalError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("error = %v", err)
	}
}

// TestPathIsNotAnOption: a manifest whose name starts with '-' is still read
// as a file.
func TestPathIsNotAnOption(t *testing.T) {
	f := write(t, `{ ok = true; }`)
	dash := filepath.Join(filepath.Dir(f), "--help.nix")
	if err := os.Rename(f, dash); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(dash))
	out, err := nix.Runner{}.EvalJSON(context.Background(), "--help.nix")
	if err != nil || strings.TrimSpace(string(out)) != `{"ok":true}` {
		t.Fatalf("out=%s err=%v", out, err)
	}
}

// TestSignedCache copies a real closure into a signed file cache and out
// again into a separate store: accepted with the cache's key, refused with
// another.
func TestSignedCache(t *testing.T) {
	src := write(t, `derivation { name = "nixmox-cache-test"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo cached > $out" ]; }`)
	out, err := exec.Command("nix-build", src, "--no-out-link", "--option", "substituters", "").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSpace(string(out))
	dir := t.TempDir()
	ctx := context.Background()
	key, err := nix.LoadOrCreateCacheKey(ctx, filepath.Join(dir, "key"), "nixmox-test")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(key.SecretFile); st.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v", st.Mode())
	}
	again, err := nix.LoadOrCreateCacheKey(ctx, filepath.Join(dir, "key"), "nixmox-test")
	if err != nil || again != key {
		t.Fatalf("reloading the key: %v %+v", err, again)
	}
	cache := filepath.Join(dir, "cache")
	if err := (nix.Runner{}).CopyToCache(ctx, cache, key, path); err != nil {
		t.Fatal(err)
	}
	good := nix.Runner{Store: filepath.Join(dir, "store-good")}
	if err := good.CopyFrom(ctx, "file://"+cache, path, key.Public); err != nil {
		t.Fatalf("trusted key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "store-good", path)); err != nil {
		t.Fatalf("not copied: %v", err)
	}
	bad := nix.Runner{Store: filepath.Join(dir, "store-bad")}
	err = bad.CopyFrom(ctx, "file://"+cache, path, "other:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if err == nil || !strings.Contains(err.Error(), "lacks a valid signature") {
		t.Fatalf("untrusted key: %v", err)
	}
}
