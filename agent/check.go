package agent

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixmox/nixmox/pkg/nix"
)

// Check returns one sentence per thing the agent lacks to run with cfg:
// Nix's programs, and directories it must write — its state directory,
// the profile's directory (a generation is a link beside the profile) and
// Nix's cache directory (nix copy from an http:// cache records what it
// saw there). Nil when it can run.
func Check(cfg Config) []string {
	problems := nix.CheckPrograms(nix.AgentPrograms)
	type dir struct {
		dir, what string
		mode      os.FileMode // if it must be made
	}
	dirs := []dir{
		{cfg.StateDir, "its state directory (--state-dir)", 0o700},
		{filepath.Dir(cfg.Profile), "the directory of the profile it switches (--profile)", 0o755},
	}
	if cache := nixCacheDir(); cache != "" {
		dirs = append(dirs, dir{cache, "Nix's cache directory ($XDG_CACHE_HOME/nix or ~/.cache/nix), which nix copy writes", 0o755})
	}
	for _, d := range dirs {
		if err := writable(d.dir, d.mode); err != nil {
			problems = append(problems, fmt.Sprintf("the agent cannot write %s %s: %v", d.what, d.dir, err))
		}
	}
	return problems
}

// nixCacheDir is where Nix keeps its cache: $XDG_CACHE_HOME/nix, else
// $HOME/.cache/nix; "" when neither is set.
func nixCacheDir() string {
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "nix")
	}
	if h := os.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "nix")
	}
	return ""
}

// writable makes dir (with mode) if needed and writes and removes a file
// in it.
func writable(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".nixmox-agent-check-")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
