package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
)

// TestNixFilesParse: every .nix file of the repository parses.
func TestNixFilesParse(t *testing.T) {
	testenv.RequireTool(t, "nix-instantiate")
	root := fixtures.Root()
	n := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".nix") {
			n++
			if out, err := exec.Command("nix-instantiate", "--parse", p).CombinedOutput(); err != nil {
				t.Errorf("%s: %v\n%s", p, err, out)
			}
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d .nix files: %v", n, err)
	}
}

// verifyUnit runs systemd-analyze verify on a unit and fails on any
// complaint (an unknown key is only a warning to systemd, not to us).
func verifyUnit(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(path), err, out)
	}
}

// TestServerUnitVerifies: deploy/nixmox-server.service passes
// systemd-analyze verify (with the binary where the unit expects it).
func TestServerUnitVerifies(t *testing.T) {
	testenv.RequireTool(t, "systemd-analyze")
	data, err := os.ReadFile(filepath.Join(fixtures.Root(), "deploy", "nixmox-server.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "/usr/local/bin/nixmox-server") {
		t.Fatal("the unit no longer runs /usr/local/bin/nixmox-server")
	}
	unit := filepath.Join(t.TempDir(), "nixmox-server.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/", bin+"/")), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, unit)
}

// TestAgentModule evaluates nixos-module/agent.nix with a stand-in for the
// NixOS module system (nixos-module/test/eval.nix says what it covers):
// its options, that a switch does not restart it, and the unit it makes,
// which systemd-analyze verify accepts — its ExecStart quoting included.
func TestAgentModule(t *testing.T) {
	testenv.RequireTool(t, "nix-instantiate", "systemd-analyze")
	pkg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pkg, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(bin, "nixmox-agent"), filepath.Join(pkg, "bin", "nixmox-agent")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json",
		filepath.Join(fixtures.Root(), "nixos-module", "test", "eval.nix"), "--argstr", "package", pkg).Output()
	if err != nil {
		t.Fatalf("evaluating the module: %v", err)
	}
	var ev struct {
		Options          []string       `json:"options"`
		Condition        bool           `json:"condition"`
		ExecStart        string         `json:"execStart"`
		ServiceConfig    map[string]any `json:"serviceConfig"`
		RestartIfChanged bool           `json:"restartIfChanged"`
		WantedBy         []string       `json:"wantedBy"`
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatal(err)
	}
	want := []string{"enable", "enrollmentTokenFile", "extraFlags", "logLevel", "package", "serverAddress", "serviceName", "stateDir"}
	if !slices.Equal(ev.Options, want) {
		t.Errorf("options %v, want %v", ev.Options, want)
	}
	if !ev.Condition || ev.RestartIfChanged || !slices.Equal(ev.WantedBy, []string{"multi-user.target"}) {
		t.Errorf("condition %t, restartIfChanged %t, wantedBy %v", ev.Condition, ev.RestartIfChanged, ev.WantedBy)
	}
	// The unit as NixOS would write it: [Service] from serviceConfig.
	var b strings.Builder
	b.WriteString("[Unit]\nDescription=nixmox-agent\n\n[Service]\n")
	for _, k := range slices.Sorted(maps.Keys(ev.ServiceConfig)) {
		v := ev.ServiceConfig[k]
		switch v := v.(type) {
		case bool:
			fmt.Fprintf(&b, "%s=%s\n", k, map[bool]string{true: "yes", false: "no"}[v])
		default:
			fmt.Fprintf(&b, "%s=%v\n", k, v)
		}
	}
	b.WriteString("\n[Install]\nWantedBy=multi-user.target\n")
	unit := filepath.Join(t.TempDir(), "nixmox-agent.service")
	if err := os.WriteFile(unit, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, unit)
	if !strings.Contains(ev.ExecStart, `"--odd arg's \"quoted\" 100%% $$HOME"`) {
		t.Errorf("an odd flag is not quoted for systemd: %s", ev.ExecStart)
	}
}
