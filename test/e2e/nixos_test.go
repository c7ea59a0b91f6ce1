package e2e

import (
	"encoding/json"
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

// agentModule evaluates nixos-module/agent.nix with the real NixOS module
// system (nixos-module/test/nixos.nix over ../shared/nixos-eval) with pkg
// as the agent's package and configFile ("" = none) as more
// configuration.
func agentModule(t *testing.T, pkg, configFile string) (ev struct {
	Options          []string          `json:"options"`
	Assertions       []string          `json:"assertions"`
	Warnings         []string          `json:"warnings"`
	Unit             string            `json:"unit"`
	ServiceConfig    map[string]any    `json:"serviceConfig"`
	RestartIfChanged bool              `json:"restartIfChanged"`
	StopIfChanged    bool              `json:"stopIfChanged"`
	Tmpfiles         []string          `json:"tmpfiles"`
	Environment      map[string]string `json:"-"`
}) {
	t.Helper()
	testenv.RequireTool(t, "nix-instantiate")
	nixpkgs := fixtures.Shared(t, "nixos-eval/nixpkgs")
	args := []string{"--eval", "--strict", "--json", filepath.Join(fixtures.Root(), "nixos-module", "test", "nixos.nix"),
		"--arg", "nixpkgs", nixpkgs, "--argstr", "package", pkg}
	if configFile != "" {
		args = append(args, "--argstr", "configFile", configFile)
	}
	out, err := exec.Command("nix-instantiate", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("evaluating the module: %v\n%s", err, out)
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestAgentModule evaluates nixos-module/agent.nix with the real NixOS
// module system — nixpkgs' lib.evalModules, NixOS's systemd unit options
// and the code that writes unit text (../shared/nixos-eval) — and checks
// its options, assertions and warnings, that a switch neither restarts nor
// stops it, and the unit text NixOS writes, which systemd-analyze verify
// accepts, odd flags' quoting included.
func TestAgentModule(t *testing.T) {
	testenv.RequireTool(t, "systemd-analyze")
	pkg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pkg, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(bin, "nixmox-agent"), filepath.Join(pkg, "bin", "nixmox-agent")); err != nil {
		t.Fatal(err)
	}
	more := filepath.Join(t.TempDir(), "more.nix")
	if err := os.WriteFile(more, []byte(`{ services.nixmox-agent.extraFlags = [ "--log-level" "debug" "--odd arg's \"quoted\" 100% $HOME" ]; }`), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := agentModule(t, pkg, more)
	want := []string{"enable", "enrollmentTokenFile", "extraFlags", "logLevel", "package", "serverAddress", "serviceName", "stateDir"}
	if !slices.Equal(ev.Options, want) {
		t.Errorf("options %v, want %v", ev.Options, want)
	}
	if len(ev.Assertions) != 0 || len(ev.Warnings) != 0 {
		t.Errorf("assertions %q, warnings %q", ev.Assertions, ev.Warnings)
	}
	if ev.RestartIfChanged || ev.StopIfChanged {
		t.Errorf("restartIfChanged %t, stopIfChanged %t: a switch would stop the agent that runs it", ev.RestartIfChanged, ev.StopIfChanged)
	}
	for _, line := range []string{"WantedBy=multi-user.target", "X-RestartIfChanged=false", "CacheDirectory=nixmox-agent",
		`Environment="XDG_CACHE_HOME=/var/cache/nixmox-agent"`, `"--systemd-run" "/nix/store/`, `"--current-system" "/run/current-system"`,
		`"--odd arg's \"quoted\" 100%% $$HOME"`} {
		if !strings.Contains(ev.Unit, line) {
			t.Errorf("the unit lacks %s:\n%s", line, ev.Unit)
		}
	}
	if !slices.Contains(ev.Tmpfiles, "d /var/lib/nixmox-agent 0700 root root -") {
		t.Errorf("tmpfiles %v", ev.Tmpfiles)
	}
	unit := filepath.Join(t.TempDir(), "nixmox-agent.service")
	if err := os.WriteFile(unit, []byte(ev.Unit), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, unit)
}

// TestFlakeOutputsEvaluate: flake.nix's outputs evaluate (with a stub
// nixpkgs over the real lib, nixos-module/test/flake-outputs.nix): a
// static build of each program from the Go sources with a vendorHash, for
// each system, and an agent module whose package defaults to the flake's
// agent. nixpkgs cannot be fetched here, so nothing is built.
func TestFlakeOutputsEvaluate(t *testing.T) {
	testenv.RequireTool(t, "nix-instantiate")
	nixpkgs := fixtures.Shared(t, "nixos-eval/nixpkgs")
	out, err := exec.Command("nix-instantiate", "--read-write-mode", "--eval", "--strict", "--json",
		filepath.Join(fixtures.Root(), "nixos-module", "test", "flake-outputs.nix"), "--arg", "nixpkgs", nixpkgs).CombinedOutput()
	if err != nil {
		t.Fatalf("evaluating flake.nix's outputs: %v\n%s", err, out)
	}
	var ev struct {
		Inputs   []string `json:"inputs"`
		Systems  []string `json:"systems"`
		Packages map[string]struct {
			Name, Pname, VendorHash string
			SubPackages             []string
			Cgo                     int
			Src                     []string
		} `json:"packages"`
		ModuleImports       []string `json:"moduleImports"`
		AgentPackageDefault string   `json:"agentPackageDefault"`
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.Inputs, []string{"nixpkgs"}) || !slices.Equal(ev.Systems, []string{"aarch64-linux", "x86_64-linux"}) {
		t.Errorf("inputs %v, systems %v", ev.Inputs, ev.Systems)
	}
	for _, p := range []string{"nixmox-server", "nixmox-agent", "nixmox-cli"} {
		got := ev.Packages[p]
		if got.Pname != p || !slices.Equal(got.SubPackages, []string{"cmd/" + p}) || got.Cgo != 0 || !strings.HasPrefix(got.VendorHash, "sha256-") {
			t.Errorf("packages.x86_64-linux.%s = %+v", p, got)
		}
		if !slices.Contains(got.Src, "go.mod") || !slices.Contains(got.Src, "cmd") || slices.Contains(got.Src, ".git") {
			t.Errorf("%s's source holds %v", p, got.Src)
		}
	}
	if ev.Packages["default"].Pname != "nixmox-cli" {
		t.Errorf("packages.default is %q", ev.Packages["default"].Pname)
	}
	if len(ev.ModuleImports) != 1 || !strings.HasSuffix(ev.ModuleImports[0], "/nixos-module/agent.nix") || ev.AgentPackageDefault != "nixmox-agent-0.1.0-dev" {
		t.Errorf("nixosModules.agent imports %v, its package defaults to %q", ev.ModuleImports, ev.AgentPackageDefault)
	}
}

// TestVendorHashIsCurrent: package.nix's vendorHash is the hash of `go mod
// vendor` for this go.sum (as `make vendor-hash` prints it), so that the
// flake builds after a dependency changes.
func TestVendorHashIsCurrent(t *testing.T) {
	testenv.RequireTool(t, "nix", "go")
	out, err := exec.Command("make", "-s", "-C", fixtures.Root(), "vendor-hash").CombinedOutput()
	if err != nil {
		t.Fatalf("make vendor-hash: %v\n%s", err, out)
	}
	hash := strings.TrimSpace(string(out))
	pkg, err := os.ReadFile(filepath.Join(fixtures.Root(), "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pkg), `vendorHash = "`+hash+`";`) {
		t.Errorf("package.nix's vendorHash is stale: go.sum vendors to %s (run make vendor-hash and put it in package.nix)", hash)
	}
}
