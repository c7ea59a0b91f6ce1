package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/nix"
)

// TestCheckRefusesUnwritableDirectories: the agent refuses to start,
// naming each directory it cannot write — the profile's (a generation is a
// link beside it) and Nix's cache (nix copy from an http:// cache writes
// there) — with one sentence each. Root is not stopped by permission bits,
// so each directory is made impossible: a path under a regular file.
func TestCheckRefusesUnwritableDirectories(t *testing.T) {
	testenv.RequireTool(t, nix.AgentPrograms...)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", filepath.Join(file, "cache"))
	problems := Check(Config{StateDir: filepath.Join(dir, "state"), Profile: filepath.Join(file, "profiles", "system")})
	var dirs []string
	for _, p := range problems {
		switch {
		case strings.Contains(p, "the directory of the profile it switches (--profile) "+filepath.Join(file, "profiles")+": "):
			dirs = append(dirs, "profile")
		case strings.Contains(p, "Nix's cache directory") && strings.Contains(p, filepath.Join(file, "cache", "nix")):
			dirs = append(dirs, "cache")
		default:
			t.Errorf("unexpected problem: %s", p)
		}
	}
	if strings.Join(dirs, ",") != "profile,cache" {
		t.Errorf("problems %q: want the profile's and the cache's directories named", problems)
	}
}

// TestCheckPassesAndMakesDirectories: with writable places the agent can
// start; the directories it needs are made (the state directory owner-only).
func TestCheckPassesAndMakesDirectories(t *testing.T) {
	testenv.RequireTool(t, nix.AgentPrograms...)
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	cfg := Config{StateDir: filepath.Join(dir, "state"), Profile: filepath.Join(dir, "profiles", "system")}
	if problems := Check(cfg); problems != nil {
		t.Fatalf("problems: %q", problems)
	}
	for path, mode := range map[string]os.FileMode{cfg.StateDir: 0o700, filepath.Dir(cfg.Profile): 0o755, filepath.Join(dir, "cache", "nix"): 0o755} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want a directory %v", path, fi.Mode(), err, mode)
		}
	}
}
