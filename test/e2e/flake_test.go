package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
)

// flakeLab is a homelab whose systems are nixosConfigurations of a flake:
// stand-in NixOS systems (testdata/flake/system.nix) evaluated with the
// real module system and the real nixos-module/agent.nix, over
// ../shared/nixos-eval's nixpkgs lib as the flake's nixpkgs input — no
// network. Their switch-to-configuration records the facts nixmox gave
// them in marks/NAME.active.
func newFlakeLab(t *testing.T) (*homelab, string) {
	needLocal(t)
	testenv.RequireTool(t, "nix")
	nixpkgs := fixtures.Shared(t, "nixos-eval/nixpkgs")
	h := &homelab{t: t, dir: t.TempDir()}
	flake := filepath.Join(h.dir, "hosts")
	marks, err := os.MkdirTemp("", "nixmox-e2e-marks-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(marks) })
	if err := os.MkdirAll(flake, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		filepath.Join(fixtures.Root(), "test", "e2e", "testdata", "flake", "system.nix"): "system.nix",
		filepath.Join(fixtures.Root(), "nixos-module", "agent.nix"):                      "agent.nix",
		filepath.Join(fixtures.Root(), "nixos-module", "test", "stub-pkgs.nix"):          "stub-pkgs.nix",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(flake, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	q := func(s string) string { b, _ := json.Marshal(s); return strings.ReplaceAll(string(b), "${", `\${`) }
	flakeNix := fmt.Sprintf(`{
  inputs.nixpkgs = { url = %s; flake = false; };
  outputs = { self, nixpkgs }:
    let
      system = name: modules: import ./system.nix { inherit nixpkgs name modules; markerDir = %s; };
      # The agent's module, as a user imports it; its package is this
      # test's build (a stand-in system never runs it).
      agent = name: [ ./agent.nix { services.nixmox-agent = { enable = true; package = builtins.toFile "nixmox-agent" ""; serverAddress = %s; serviceName = name; }; } ];
    in
    {
      nixosConfigurations = {
        a = system "a" (agent "a");
        b = system "b" (agent "b");
        noagent = system "noagent" [ ];
      };
    };
}
`, q("path:"+nixpkgs), q(marks), q(e2eNet+".1:7443"))
	if err := os.WriteFile(filepath.Join(flake, "flake.nix"), []byte(flakeNix), 0o644); err != nil {
		t.Fatal(err)
	}
	// As a user commits it: locked (offline: the input is a path).
	lock := exec.Command("nix", "--extra-experimental-features", "nix-command flakes", "flake", "lock")
	lock.Dir = flake
	if out, err := lock.CombinedOutput(); err != nil {
		t.Fatalf("nix flake lock: %v\n%s", err, out)
	}
	h.manifest = filepath.Join(h.dir, "m.json")
	h.writeFlakeManifest(t, marks, "")
	return h, marks
}

// writeFlakeManifest writes the lab's manifest: a from the manifest's
// flake, b by closure = FLAKE#ATTR, and, if extra is set, a service c of
// that closure.
func (h *homelab) writeFlakeManifest(t *testing.T, marks, extra string) {
	health := func(name string) string {
		return fmt.Sprintf(`{"liveness": "grep -q '\"service\":\"%s\"' %s/%s.active", "interval": 1, "timeout": 30}`, name, marks, name)
	}
	c := ""
	if extra != "" {
		c = fmt.Sprintf(`, "c": {"ip": "%s.22", "hostname": "c.lab.test", "closure": %q, "interface": {"health": %s}}`, e2eNet, extra, health("c"))
	}
	m := fmt.Sprintf(`{
  "network": {"dns_server": "%[1]s.2", "gateway": "%[1]s.1", "network_cidr": "%[1]s.0/24"},
  "health_check_timeout": 60,
  "flake": "./hosts",
  "services": {
    "a": {"ip": "%[1]s.20", "hostname": "a.lab.test", "interface": {"health": %[2]s}},
    "b": {"ip": "%[1]s.21", "hostname": "b.lab.test", "closure": "./hosts#nixosConfigurations.b", "interface": {"health": %[3]s}}%[4]s
  }
}`, e2eNet, health("a"), health("b"), c)
	if err := os.WriteFile(h.manifest, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFlakeSystemsDeployed: services whose systems are a flake's
// nixosConfigurations are deployed end to end by the local provider — a
// through the manifest's flake (nixosConfigurations.a), b through closure
// = "./hosts#nixosConfigurations.b" — each switched to a NixOS system
// that carries the facts nixmox added with extendModules; a configuration
// without the agent module is refused before anything is handed out,
// with the module to import named.
func TestFlakeSystemsDeployed(t *testing.T) {
	h, marks := newFlakeLab(t)
	h.start()
	if r := h.apply(); r.code != 0 {
		t.Fatalf("apply exited %d:\n%s\nserver:\n%s", r.code, r.out, h.srv.log())
	}
	for _, name := range []string{"a", "b"} {
		var facts struct {
			Name   string
			Nixmox struct {
				Service string
				Files   string
			}
		}
		data, err := os.ReadFile(filepath.Join(marks, name+".active"))
		if err != nil {
			t.Fatalf("%s was not switched: %v", name, err)
		}
		if err := json.Unmarshal(data, &facts); err != nil || facts.Name != name || facts.Nixmox.Service != name || facts.Nixmox.Files == "" {
			t.Errorf("%s runs %s (%v): want its own system with nixmox's facts", name, data, err)
		}
		if g := generation(t, h.socket, name); g.GetGeneration() != 1 {
			t.Errorf("%s is on generation %d", name, g.GetGeneration())
		}
	}

	h.writeFlakeManifest(t, marks, "./hosts#nixosConfigurations.noagent")
	r := h.apply()
	if r.code == 0 {
		t.Fatalf("a system without the agent was deployed:\n%s", r.out)
	}
	if !strings.Contains(r.out, "nixosConfigurations.noagent is a NixOS system without nixmox-agent") || !strings.Contains(r.out, "import nixmox's NixOS module") {
		t.Errorf("the refusal does not say why:\n%s", r.out)
	}
	if _, err := os.Stat(filepath.Join(marks, "c.active")); err == nil {
		t.Error("c was switched to a system without the agent")
	}
	if s := status(t, h.socket)["c"]; s.GetDesiredGeneration() != 0 {
		t.Errorf("c was handed generation %d", s.GetDesiredGeneration())
	}
}
