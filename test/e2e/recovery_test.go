package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/testenv"
)

// recovery is a server (confirm timeout 2 s, restartable on the same
// address) and one agent, for a, whose closure a.nix activates by writing
// its label to a.active — and, while the file "hold" exists, only once the
// file "release" exists (a slow activation).
type recovery struct {
	t                 *testing.T
	dir, socket, addr string
	srv, agent        *proc
	manifest, flag    string
	hold, release     string
	enroll            string
}

func newRecovery(t *testing.T) *recovery {
	testenv.RequireTool(t, "nix-build", "terraform")
	r := &recovery{t: t, dir: t.TempDir()}
	r.socket = filepath.Join(r.dir, "control.sock")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = lis.Addr().String()
	lis.Close()
	r.flag, r.hold, r.release = filepath.Join(r.dir, "healthy"), filepath.Join(r.dir, "hold"), filepath.Join(r.dir, "release")
	r.manifest = filepath.Join(r.dir, "m.json")
	if err := os.WriteFile(r.manifest, []byte(fmt.Sprintf(`{
  "network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "health_check_timeout": 30,
  "services": {"a": {"ip": "10.9.0.10", "hostname": "a.lab.test", "closure": "a.nix",
    "interface": {"health": {"startup": "test -e %s", "liveness": "true", "interval": 1, "timeout": 300}}}}
}`, r.flag)), 0o644); err != nil {
		t.Fatal(err)
	}
	r.serve()
	enroll := filepath.Join(r.dir, "enroll-a.json")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "token", "a", "--socket", r.socket, "-o", enroll).CombinedOutput(); err != nil {
		t.Fatalf("token: %v\n%s", err, out)
	}
	r.enroll = enroll
	r.startAgent()
	r.srv.await(t, 0, `agent connected: service=a\b`)
	return r
}

// startAgent runs a's agent (again, as systemd's Restart= would).
func (r *recovery) startAgent() {
	r.agent = run(r.t, "nixmox-agent", "--server", r.addr, "--service", "a", "--enroll-file", r.enroll,
		"--state-dir", filepath.Join(r.dir, "agent-a"), "--profile", filepath.Join(r.dir, "profiles-a", "system"))
}

func (r *recovery) serve() {
	r.srv = run(r.t, "nixmox-server", "serve", "--state-dir", filepath.Join(r.dir, "server"), "--listen", r.addr,
		"--socket", r.socket, "--confirm-timeout", "2s")
	r.srv.await(r.t, 0, `serving: agents=`)
}

// closure writes a.nix with the label the next generation activates.
func (r *recovery) closure(label string) {
	expr := testenv.ActivateExpr("nixmox-e2e-recovery-"+label, fmt.Sprintf(
		"#!/bin/sh\nif [ -e %s ]; then while [ ! -e %s ]; do /bin/sleep 0.05; done; fi\necho %s > %s\n",
		r.hold, r.release, label, filepath.Join(r.dir, "a.active")))
	if err := os.WriteFile(filepath.Join(r.dir, "a.nix"), []byte(expr), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *recovery) touch(path string) {
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// deployFirst rolls a1 out, healthy, and sets up a2 to be switched to with
// its startup check blocked until r.flag exists.
func (r *recovery) deployFirst() {
	r.closure("a1")
	r.touch(r.flag)
	if out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", r.manifest, "--socket", r.socket).CombinedOutput(); err != nil {
		r.t.Fatalf("first apply: %v\n%s\nserver:\n%s\nagent:\n%s", err, out, r.srv.log(), r.agent.log())
	}
	os.Remove(r.flag)
	r.closure("a2")
}

// applyUntilSwitched starts an apply of a2 and kills the server (and the
// apply) once the agent reported generation 2 switched: its startup check
// waits for r.flag, so the server is gone before it could confirm.
func (r *recovery) applyUntilSwitched() {
	apply := run(r.t, "nixmox-cli", "apply", "-f", r.manifest, "--socket", r.socket)
	r.srv.await(r.t, 0, `stage: service=a generation=2 stage=STAGE_SWITCHED`)
	r.srv.kill()
	apply.kill()
}

// finish waits for the resumed rollout (or, if it ended, an unchanged
// apply) to end with a healthy on generation 2, without --force.
func (r *recovery) finish() {
	r.srv.await(r.t, 0, `rollout finished: .*ok=true`)
	if got := read(r.t, filepath.Join(r.dir, "a.active")); got != "a2" {
		r.t.Errorf("a runs %q, want a2", got)
	}
	s := status(r.t, r.socket)["a"]
	if s.GetGeneration() != 2 || s.GetDesiredGeneration() != 2 {
		r.t.Errorf("status of a: %v; want generation 2 of 2", s)
	}
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", r.manifest, "--socket", r.socket).CombinedOutput()
	if err != nil {
		r.t.Errorf("the next unchanged apply: %v\n%s", err, out)
	}
}

// TestSelfRevertIsRetried (issue case 1): the server is killed when the
// agent has switched to a new generation; the agent, unconfirmed past its
// confirm timeout, reverts by itself; the restarted server's resumed
// rollout hands the generation out again and ends healthy on it — no
// --force, and later applies do not fail on it.
func TestSelfRevertIsRetried(t *testing.T) {
	r := newRecovery(t)
	r.deployFirst()
	r.applyUntilSwitched()
	r.touch(r.flag) // healthy now, but nobody confirms
	r.agent.await(t, 0, `stage: service=a generation=2 stage=rolled_back`)
	if got := read(t, filepath.Join(r.dir, "a.active")); got != "a1" {
		t.Fatalf("after its own revert a runs %q, want a1", got)
	}
	r.serve()
	r.finish()
}

// TestAgentReconnectingMidRollback (issue case 2): the agent reconnects to
// the restarted server while it is still rolling back (a slow activation
// of the old generation); the server acts on what the agent reports from
// then on, not on its hello, and the rollout ends healthy on the new
// generation.
func TestAgentReconnectingMidRollback(t *testing.T) {
	r := newRecovery(t)
	r.deployFirst()
	r.applyUntilSwitched()
	r.touch(r.hold) // the rollback's activation of a1 will wait for "release"
	r.touch(r.flag)
	r.agent.await(t, 0, `stage: service=a generation=2 stage=failed`)
	r.serve()
	r.srv.await(t, 0, `agent connected: service=a generation=1`)
	os.Remove(r.hold)
	r.touch(r.release)
	r.finish()
}

// TestAgentKilledMidSwitch (issue #13, supervision): the agent is
// SIGKILLed after switching to a new generation, before its checks
// passed; started again (as systemd restarts it), it finds its switch
// record and the system on the new generation, so it checks it again and
// waits for the server, which confirms it: the rollout ends healthy on it
// and the apply exits 0.
func TestAgentKilledMidSwitch(t *testing.T) {
	r := newRecovery(t)
	r.deployFirst()
	apply := run(t, "nixmox-cli", "apply", "-f", r.manifest, "--socket", r.socket)
	r.agent.await(t, 0, `stage: .*generation=2 stage=switched`)
	r.agent.kill()
	if got := read(t, filepath.Join(r.dir, "a.active")); got != "a2" {
		t.Fatalf("when the agent died a ran %q, want a2", got)
	}
	r.startAgent()
	r.agent.await(t, 0, `resuming a switch: .*generation=2`)
	r.touch(r.flag)
	<-apply.done
	if code := apply.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("apply exited %d:\n%s\nserver:\n%s\nagent:\n%s", code, apply.log(), r.srv.log(), r.agent.log())
	}
	r.finish()
}

// TestAgentKilledDuringActivation: the agent is SIGKILLed while it
// switches to the new generation (whose activation waits on "release");
// the activation is not the agent's to kill and goes on. Depending on
// where the kill fell, the agent started again resumes from its switch
// record (the profile reached the new generation), rolls back and says it
// was interrupted (it had not), or — killed before it wrote the record —
// knows nothing of the generation, and the server, seeing it reconnect
// neither applying nor done with it, asks again. Every way the rollout
// ends healthy on the new generation and the apply exits 0.
func TestAgentKilledDuringActivation(t *testing.T) {
	r := newRecovery(t)
	r.deployFirst()
	r.touch(r.hold) // a2's activation waits for "release"
	apply := run(t, "nixmox-cli", "apply", "-f", r.manifest, "--socket", r.socket)
	r.agent.await(t, 0, `stage: .*generation=2 stage=pulled`)
	r.agent.kill()
	r.touch(r.release) // the orphaned activation finishes, and any other
	r.startAgent()
	r.touch(r.flag)
	<-apply.done
	if code := apply.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("apply exited %d:\n%s\nserver:\n%s\nagent:\n%s", code, apply.log(), r.srv.log(), r.agent.log())
	}
	r.finish()
}

// TestBuildDiesWithTheServer (issue #13, supervision): a nix-build the
// server started does not outlive a SIGKILLed server. a's closure builds
// for ten minutes (a sleep with a unique argument, found in /proc); once
// it runs the server is killed, and the build must be gone soon after.
func TestBuildDiesWithTheServer(t *testing.T) {
	r := newRecovery(t)
	nonce := fmt.Sprintf("600.%d", time.Now().UnixNano()%1000000)
	expr := fmt.Sprintf(`derivation {
  name = "nixmox-e2e-slow-build";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "exec /bin/sleep %s" ];
}
`, nonce)
	if err := os.WriteFile(filepath.Join(r.dir, "a.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := run(t, "nixmox-cli", "apply", "-f", r.manifest, "--socket", r.socket)
	building := func() bool { return len(processesWith(t, "/bin/sleep\x00"+nonce+"\x00")) > 0 }
	testenv.Eventually(t, "the build to start", building)
	r.srv.kill()
	apply.kill()
	testenv.Eventually(t, "the build to end with the server", func() bool { return !building() })
}

// processesWith returns the pids whose command line contains s (its
// arguments separated by NUL).
func processesWith(t *testing.T, s string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(data)+"\x00", s) {
			pids = append(pids, pid)
		}
	}
	return pids
}
