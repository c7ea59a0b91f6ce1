package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixmox/nixmox/agent"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/nix"
	"golang.org/x/sys/unix"
)

// system is a stand-in NixOS system built with real Nix: a toplevel with
// bin/switch-to-configuration, nixos-version and the nixmox-agent unit
// (each can be left out). Its switch-to-configuration is a script that
// records how it was run (arguments, pid, parent, session, cgroup,
// NIXMOX_SERVICE) in DIR/LABEL.started, then waits on the FIFO
// DIR/LABEL.go if there is one, writes LABEL to the state file and to
// DIR/finished, and fails with exit 4 when DIR/LABEL.fail exists.
type system struct {
	label, state, dir string
	noVersion         bool
	noAgentUnit       bool
}

func (s system) build(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "nix-build")
	script := fmt.Sprintf(`#!/bin/sh
d=%[1]s
{
  echo "args=$*"
  echo "pid=$$"
  echo "ppid=$PPID"
  echo "session=$(cut -d' ' -f6 /proc/$$/stat)"
  echo "cgroup=$(cat /proc/$$/cgroup)"
  echo "service=$NIXMOX_SERVICE"
} > "$d/%[2]s.started.tmp"
mv "$d/%[2]s.started.tmp" "$d/%[2]s.started"
if [ -p "$d/%[2]s.go" ]; then read go < "$d/%[2]s.go"; fi
echo %[2]s > %[3]s
echo %[2]s >> "$d/finished"
if [ -e "$d/%[2]s.fail" ]; then echo "%[2]s cannot switch" >&2; exit 4; fi
`, s.dir, s.label, s.state)
	var extra []string
	if !s.noVersion {
		extra = append(extra, "echo 25.11.standin > $out/nixos-version")
	}
	if !s.noAgentUnit {
		extra = append(extra, "/bin/mkdir -p $out/etc/systemd/system", "echo '[Service]' > $out/etc/systemd/system/nixmox-agent.service")
	}
	expr := fmt.Sprintf(`derivation {
  name = "nixos-system-standin-%s";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  script = builtins.toFile "switch-to-configuration" %s;
  args = [ "-c" %s ];
}`, s.label, testenv.NixString(script), testenv.NixString(strings.Join(append([]string{
		"/bin/mkdir -p $out/bin", "/bin/cp $script $out/bin/switch-to-configuration", "/bin/chmod +x $out/bin/switch-to-configuration"}, extra...), "\n")))
	f := filepath.Join(t.TempDir(), "system.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-build", f, "--no-out-link", "--option", "substituters", "").CombinedOutput()
	if err != nil {
		t.Fatalf("nix-build: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// started reads what the stand-in switch of label recorded.
func started(t *testing.T, dir, label string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, label+".started"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// gate is a FIFO the stand-in switch blocks on until the test opens it.
func gate(t *testing.T, dir, label string) (release func()) {
	t.Helper()
	p := filepath.Join(dir, label+".go")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, "go")
		f.Close()
	}
}

func exists(path string) func() bool {
	return func() bool { _, err := os.Stat(path); return err == nil }
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func nixosSwitcher(t *testing.T, dir string, rec *recorder) *agent.Switcher {
	return &agent.Switcher{
		Profile:   nix.Profile(filepath.Join(dir, "profiles", "system")),
		StateDir:  filepath.Join(dir, "agent"),
		Report:    rec.report,
		Activator: agent.Activator{LogDir: dir, Env: []string{"NIXMOX_SERVICE=web"}},
		After:     func(time.Duration) <-chan time.Time { return nil },
	}
}

// onOne is a switcher in a new directory whose system runs the stand-in
// system "one", confirmed; the stages reported so far are taken.
func onOne(t *testing.T) (dir, state string, rec *recorder, sw *agent.Switcher, g1 string) {
	t.Helper()
	dir = t.TempDir()
	state = filepath.Join(dir, "active")
	rec = &recorder{}
	sw = nixosSwitcher(t, dir, rec)
	confirmed := make(chan struct{})
	close(confirmed)
	g1 = system{label: "one", state: state, dir: dir}.build(t)
	if err := sw.Apply(context.Background(), agent.Desired{Generation: 1, StorePath: g1, Health: check("one", state)}, confirmed); err != nil {
		t.Fatal(err)
	}
	rec.take()
	return dir, state, rec, sw, g1
}

func check(label, state string) health.Spec {
	return health.Spec{Liveness: fmt.Sprintf("grep -qx %s %s", label, state), Timeout: 10 * time.Second}
}

// TestRunningSwitchOutlivesSupersedingAndShutdown: a NixOS switch is
// never the victim of what happens to the agent. A newer generation waits
// for the running switch to end (then the superseded one is rolled back);
// the agent stopping (SIGTERM ends Run's context) returns at once and
// leaves the switch running to its end, in a session of its own.
func TestRunningSwitchOutlivesSupersedingAndShutdown(t *testing.T) {
	dir, state, rec, sw, _ := onOne(t)
	confirmed := make(chan struct{})
	close(confirmed)

	// Superseded while switching: the switch finishes, then is undone.
	g2 := system{label: "two", state: state, dir: dir}.build(t)
	release := gate(t, dir, "two")
	ctx, supersede := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sw.Apply(ctx, agent.Desired{Generation: 2, StorePath: g2, Health: check("two", state)}, make(chan struct{}))
	}()
	testenv.Eventually(t, "the switch to two", exists(filepath.Join(dir, "two.started")))
	supersede(agent.ErrSuperseded)
	release()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "generation 2 was superseded before it was healthy") {
		t.Fatalf("error = %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "finished")); string(data) != "one\ntwo\none\n" {
		t.Errorf("switches that finished: %q, want one, two (not killed), one (the rollback)", data)
	}
	if got := rec.take(); got != "2:switched 2:failed 2:rolled_back" {
		t.Errorf("stages %s", got)
	}
	s := started(t, dir, "two")
	if s["args"] != "switch" || s["service"] != "web" {
		t.Errorf("the switch ran with %v", s)
	}
	if sid, _ := strconv.Atoi(s["session"]); sid == 0 || sid == must(unix.Getsid(0)) {
		t.Errorf("the switch ran in session %s, the agent's is %d: it must have its own", s["session"], must(unix.Getsid(0)))
	}

	// Shut down while switching: Apply returns, the switch goes on.
	g3 := system{label: "three", state: state, dir: dir}.build(t)
	release = gate(t, dir, "three")
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		done <- sw.Apply(ctx, agent.Desired{Generation: 3, StorePath: g3, Health: check("three", state)}, make(chan struct{}))
	}()
	testenv.Eventually(t, "the switch to three", exists(filepath.Join(dir, "three.started")))
	stop()
	if err := <-done; !errors.Is(err, agent.ErrShutdown) {
		t.Fatalf("Apply during shutdown = %v, want ErrShutdown", err)
	}
	pid, _ := strconv.Atoi(started(t, dir, "three")["pid"])
	if !alive(pid) {
		t.Fatalf("the switch (pid %d) died with the agent", pid)
	}
	release()
	testenv.Eventually(t, "the end of the switch to three", func() bool { return !alive(pid) })
	if data, _ := os.ReadFile(filepath.Join(dir, "finished")); !strings.HasSuffix(string(data), "three\n") {
		t.Errorf("switches that finished: %q, want three last", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent", "switch.json")); err != nil {
		t.Errorf("no switch record left for the next start: %v", err)
	}

	// The next start: the switch to three ended and the system runs it,
	// so three is checked and waits for the server's confirmation.
	r := nixosSwitcher(t, dir, rec).Recover()
	if r.Generation != 3 || r.Confirmed || !r.Resume || r.Err != nil {
		t.Fatalf("recovery %+v, want three resumed", r)
	}
	if err := nixosSwitcher(t, dir, rec).ResumeRecovered(context.Background(), r, confirmed); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "agent", "generation")); string(got) != "3" || active(t, state) != "three" {
		t.Errorf("after the resumed switch: generation %q, running %q", got, active(t, state))
	}
}

// TestRecoverAfterTheAgentDied: an agent that died between setting the
// profile and the server's confirmation finishes the story at its next
// start: rolled back by store path once the deadline has passed, resumed
// (checked again, then waiting) before it, and made active when the
// server had confirmed it. The failed profile generation is deleted.
func TestRecoverAfterTheAgentDied(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "active")
	rec := &recorder{}
	sw := nixosSwitcher(t, dir, rec)
	confirmed := make(chan struct{})
	close(confirmed)
	g1 := system{label: "one", state: state, dir: dir}.build(t)
	if err := sw.Apply(context.Background(), agent.Desired{Generation: 1, StorePath: g1, Health: check("one", state)}, confirmed); err != nil {
		t.Fatal(err)
	}
	g2 := system{label: "two", state: state, dir: dir}.build(t)
	// The agent stops while two waits for its confirmation: what a
	// SIGKILL leaves too (the record is written before each step).
	dies := func(g string, label string) {
		t.Helper()
		ctx, stop := context.WithCancel(context.Background())
		healthy := make(chan struct{})
		sw.Report = func(g int64, st agent.Stage, _ string) {
			if st == agent.Healthy {
				close(healthy)
			}
		}
		done := make(chan error, 1)
		go func() {
			done <- sw.Apply(ctx, agent.Desired{Generation: 2, StorePath: g, Health: check(label, state), ConfirmTimeout: time.Minute}, make(chan struct{}))
		}()
		select {
		case <-healthy:
		case err := <-done:
			t.Fatalf("Apply ended before the generation was healthy: %v", err)
		}
		stop()
		if err := <-done; !errors.Is(err, agent.ErrShutdown) {
			t.Fatalf("Apply = %v", err)
		}
	}
	recordFile := filepath.Join(dir, "agent", "switch.json")
	var saved struct {
		Deadline time.Time `json:"deadline"`
	}

	// Before the deadline: resumed, and confirmed by the server.
	dies(g2, "two")
	data, err := os.ReadFile(recordFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &saved); err != nil || saved.Deadline.IsZero() {
		t.Fatalf("the record %s has no deadline (%v)", data, err)
	}
	next := nixosSwitcher(t, dir, rec)
	next.Now = func() time.Time { return saved.Deadline.Add(-time.Second) }
	r := next.Recover()
	if !r.Resume || r.Generation != 2 {
		t.Fatalf("before the deadline: %+v, want resumed", r)
	}
	if err := next.ResumeRecovered(context.Background(), r, confirmed); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "agent", "generation")); string(got) != "2" {
		t.Errorf("after the resumed confirmation the active generation is %q", got)
	}

	// After the deadline: rolled back, by store path, the failed profile
	// generation deleted.
	g3 := system{label: "three", state: state, dir: dir}.build(t)
	dies(g3, "three")
	failedGen, _ := sw.Profile.Current()
	data, _ = os.ReadFile(recordFile)
	json.Unmarshal(data, &saved)
	next = nixosSwitcher(t, dir, rec)
	next.Now = func() time.Time { return saved.Deadline.Add(time.Second) }
	r = next.Recover()
	if r.Resume || r.Confirmed || r.Err == nil || !strings.Contains(r.Err.Error(), "generation 2 was not confirmed by the server within 1m0s") {
		t.Fatalf("after the deadline: %+v", r)
	}
	if p, _ := sw.Profile.Path(); active(t, state) != "two" || !strings.HasSuffix(p, "-nixos-system-standin-two") {
		t.Errorf("after the rollback the profile is on %s and the system runs %q, want two", p, active(t, state))
	}
	if _, err := os.Lstat(fmt.Sprintf("%s-%d-link", sw.Profile, failedGen)); !os.IsNotExist(err) {
		t.Errorf("the failed profile generation %d is still there (%v)", failedGen, err)
	}
	if _, err := os.Stat(recordFile); !os.IsNotExist(err) {
		t.Errorf("the record outlived the rollback")
	}

	// A switch that did not reach the new system (it runs three still):
	// rolled back, whatever the deadline.
	g4 := system{label: "four", state: state, dir: dir}.build(t)
	dies(g4, "four")
	link := filepath.Join(dir, "current-system")
	os.Remove(link)
	if err := os.Symlink(g3, link); err != nil {
		t.Fatal(err)
	}
	next = nixosSwitcher(t, dir, rec)
	next.CurrentSystem = link
	r = next.Recover()
	if r.Resume || r.Err == nil || !strings.Contains(r.Err.Error(), "is not what runs") {
		t.Fatalf("a switch that did not reach the system: %+v", r)
	}

	// The server had confirmed it: made active, nothing switched.
	dies(g3, "three")
	data, _ = os.ReadFile(recordFile)
	var raw map[string]any
	json.Unmarshal(data, &raw)
	raw["confirmed"] = true // as a stop right after the confirmation was written down leaves it
	data, _ = json.Marshal(raw)
	os.WriteFile(recordFile, data, 0o600)
	next = nixosSwitcher(t, dir, rec)
	next.Now = func() time.Time { return saved.Deadline.Add(time.Hour) }
	r = next.Recover()
	if !r.Confirmed || r.Err != nil {
		t.Fatalf("confirmed before the stop: %+v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "agent", "generation")); string(got) != "2" || active(t, state) != "three" {
		t.Errorf("after finishing a confirmed switch: generation %q, running %q", got, active(t, state))
	}
}

// TestRefusesWhatWouldBreakTheContainer: a NixOS system without the
// nixmox-agent unit (the switch would remove the agent) or without
// nixos-version, and a generic closure where NixOS runs, are refused
// before anything changes, with the reason reported.
func TestRefusesWhatWouldBreakTheContainer(t *testing.T) {
	dir, state, rec, sw, g1 := onOne(t)
	confirmed := make(chan struct{})
	close(confirmed)
	for _, c := range []struct {
		path, want string
	}{
		{system{label: "noagent", state: state, dir: dir, noAgentUnit: true}.build(t), "has no nixmox-agent unit: switching to it would remove the agent"},
		{system{label: "noversion", state: state, dir: dir, noVersion: true}.build(t), "no nixos-version: it is not a NixOS system"},
		{generation(t, "generic", state), "is not a NixOS system (no bin/switch-to-configuration), and this container runs NixOS"},
	} {
		err := sw.Apply(context.Background(), agent.Desired{Generation: 2, StorePath: c.path, Health: check("x", state)}, confirmed)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error = %v, want %q", c.path, err, c.want)
		}
		if got := rec.take(); got != "2:failed" {
			t.Errorf("%s: stages %s", c.path, got)
		}
		if p, _ := sw.Profile.Path(); p != g1 || active(t, state) != "one" {
			t.Errorf("%s: the profile moved to %s", c.path, p)
		}
	}
}

func must(n int, err error) int {
	if err != nil {
		panic(err)
	}
	return n
}

// TestSwitchRunsAsATransientUnit: with systemd-run, the switch is
// systemd's transient unit nixmox-agent-switch, waited for and collected,
// its output in a file (not a pipe the agent's death would break), its
// environment set on the unit. systemd is not PID 1 on the machines the
// tests run on, so systemd-run is a stand-in that records its arguments
// and runs the command after "--" in a session of its own, with the
// --setenv variables and the output file of StandardOutput=.
func TestSwitchRunsAsATransientUnit(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "active")
	standin := filepath.Join(dir, "systemd-run")
	if err := os.WriteFile(standin, []byte(`#!/bin/sh
printf '%s\n' "$@" > "$(dirname "$0")/systemd-run.args"
out=/dev/null
while [ "$1" != "--" ]; do
  case "$1" in
    --setenv=*) export "${1#--setenv=}" ;;
    --property=StandardOutput=append:*) out="${1#--property=StandardOutput=append:}" ;;
  esac
  shift
done
shift
exec setsid -w "$@" >> "$out" 2>&1
`), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	sw := nixosSwitcher(t, dir, rec)
	sw.Activator.SystemdRun = standin
	confirmed := make(chan struct{})
	close(confirmed)
	g1 := system{label: "one", state: state, dir: dir}.build(t)
	if err := sw.Apply(context.Background(), agent.Desired{Generation: 1, StorePath: g1, Health: check("one", state)}, confirmed); err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "systemd-run.args"))
	for _, want := range []string{"--unit=nixmox-agent-switch", "--wait", "--collect", "--service-type=exec", "--setenv=NIXMOX_SERVICE=web",
		"--property=StandardOutput=append:" + filepath.Join(dir, "activation.log"), "--\n" + g1 + "/bin/switch-to-configuration\nswitch\n"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("systemd-run was run without %q:\n%s", want, args)
		}
	}
	if s := started(t, dir, "one"); s["service"] != "web" || s["session"] == strconv.Itoa(must(unix.Getsid(0))) {
		t.Errorf("the unit's switch ran with %v", s)
	}

	// A failing switch: its output, from the unit's log file, is in the
	// error; the system goes back to one.
	g2 := system{label: "two", state: state, dir: dir}.build(t)
	os.WriteFile(filepath.Join(dir, "two.fail"), nil, 0o600)
	err := sw.Apply(context.Background(), agent.Desired{Generation: 2, StorePath: g2, Health: check("two", state)}, confirmed)
	if err == nil || !strings.Contains(err.Error(), "two cannot switch") || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("error = %v", err)
	}
	if active(t, state) != "one" {
		t.Errorf("after the failed switch the system runs %q", active(t, state))
	}
}
