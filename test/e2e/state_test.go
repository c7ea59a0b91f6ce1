package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/testenv"
)

// TestDamagedStateIsRefusedAndRestored: a server's state file emptied,
// truncated, with pages overwritten or with garbage meta pages makes the
// next nixmox-server serve refuse to start — exit 1, one sentence naming
// the file, what is wrong and how to restore it, no panic — and `state
// restore` from the automatic backups brings the history back.
func TestDamagedStateIsRefusedAndRestored(t *testing.T) {
	testenv.RequireTool(t, "nix-build", "terraform")
	dir := t.TempDir()
	state := filepath.Join(dir, "server")
	db := filepath.Join(state, "state.db")
	socket := filepath.Join(dir, "control.sock")
	serveArgs := []string{"serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--socket", socket, "--http-listen", "", "--no-substituters"}
	manifest := filepath.Join(dir, "m.json")
	if err := os.WriteFile(manifest, []byte(`{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "services": {"b": {"ip": "10.9.0.11", "hostname": "b.lab.test", "exec": ["true"]}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), append(args, "--socket", socket)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nixmox-cli %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	rollouts := func() int {
		t.Helper()
		var h struct {
			Rollouts []json.RawMessage `json:"rollouts"`
		}
		if err := json.Unmarshal([]byte(cli("history", "--output", "json")), &h); err != nil {
			t.Fatal(err)
		}
		return len(h.Rollouts)
	}

	// Two rollouts (with --force, so that each is a real one), then stop.
	srv := run(t, "nixmox-server", serveArgs...)
	srv.await(t, 0, `serving:`)
	cli("apply", "-f", manifest)
	cli("apply", "-f", manifest, "--force")
	if n := rollouts(); n != 2 {
		t.Fatalf("history has %d rollouts, want 2", n)
	}
	srv.kill()
	backups, _ := filepath.Glob(filepath.Join(state, "backups", "state-*.db"))
	if len(backups) != 3 { // at the start, and after each rollout
		t.Fatalf("backups %v, want 3", backups)
	}
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "state", "check", "--state-dir", state).CombinedOutput(); err != nil ||
		!regexp.MustCompile(`consistent, schema 3, state [0-9a-f]{32}, 2 rollouts`).Match(out) {
		t.Fatalf("state check: %v\n%s", err, out)
	}

	const page = 4096
	for _, tc := range []struct {
		name, want string
		damage     func([]byte) []byte
	}{
		{"emptied", "the file is empty, but " + filepath.Join(state, "ca", "state-id") + " says this server had state", func([]byte) []byte { return nil }},
		{"truncated", "it is damaged", func(d []byte) []byte { return d[:len(d)/2+100] }},
		{"pages overwritten", "it is damaged", func(d []byte) []byte {
			d = bytes.Clone(d)
			for _, p := range []int{2, 3, 4} {
				copy(d[p*page:(p+1)*page], bytes.Repeat([]byte{0x5A}, page))
			}
			return d
		}},
		{"garbage meta", "it is damaged", func(d []byte) []byte {
			d = bytes.Clone(d)
			copy(d[:2*page], bytes.Repeat([]byte("garbage!"), 2*page/8))
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(db, tc.damage(good), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(filepath.Join(bin, "nixmox-server"), serveArgs...).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("serve on a damaged state: %v, want exit 1\n%s", err, out)
			}
			for _, want := range []string{"refusing to serve from " + db + ": " + tc.want, "The newest automatic backup is " + filepath.Join(state, "backups", "state-"),
				"nixmox-server state restore --state-dir " + state} {
				if !strings.Contains(string(out), want) {
					t.Errorf("the refusal does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "goroutine ") || strings.Contains(string(out), "serving:") {
				t.Errorf("it panicked or served:\n%s", out)
			}
			out, err = exec.Command(filepath.Join(bin, "nixmox-server"), "state", "restore", "--state-dir", state).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "restored "+db+" from "+filepath.Join(state, "backups")) {
				t.Fatalf("state restore: %v\n%s", err, out)
			}
			srv := run(t, "nixmox-server", serveArgs...)
			srv.await(t, 0, `serving:`)
			if n := rollouts(); n != 2 {
				t.Errorf("after the restore history has %d rollouts, want 2", n)
			}
			srv.kill()
			if replaced, _ := filepath.Glob(db + ".replaced-*"); len(replaced) == 0 {
				t.Error("the damaged file was not kept beside the restored one")
			}
			good, err = os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSecondServerOnTheSameState: a second server on a state directory
// another one serves from says which process holds it, and exits 1.
func TestSecondServerOnTheSameState(t *testing.T) {
	testenv.RequireTool(t, "nix-build", "terraform")
	dir := t.TempDir()
	state := filepath.Join(dir, "server")
	first := run(t, "nixmox-server", "serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--socket", filepath.Join(dir, "a.sock"))
	first.await(t, 0, `serving:`)
	out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "serve", "--state-dir", state, "--listen", "127.0.0.1:0",
		"--socket", filepath.Join(dir, "b.sock"), "--http-listen", "").CombinedOutput()
	want := "another nixmox-server (pid " + strconv.Itoa(first.cmd.Process.Pid) + ") serves from " + state
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), want) {
		t.Errorf("a second server: %v, want exit 1 saying %q\n%s", err, want, out)
	}
}
