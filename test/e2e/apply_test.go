package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/server/store"
)

// closure writes a Nix file whose derivation's bin/activate writes label
// to marker.
func closure(t *testing.T, dir, name, label, marker string) {
	t.Helper()
	expr := testenv.ActivateExpr("nixmox-e2e-"+label, fmt.Sprintf("#!/bin/sh\necho %s > %s\n", label, marker))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
}

func manifestJSON(t *testing.T, path, bClosure, bLiveness string, dir string) {
	t.Helper()
	m := fmt.Sprintf(`{
  "network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "health_check_timeout": 120,
  "services": {
    "a": {"ip": "10.9.0.10", "hostname": "a.lab.test", "closure": "a.nix",
          "interface": {"health": {"liveness": "grep -qx a1 %s/a.active", "interval": 1, "timeout": 10, "retries": 0}}},
    "b": {"ip": "10.9.0.11", "hostname": "b.lab.test", "depends_on": ["a"], "closure": %q,
          "interface": {"health": {"liveness": %q, "interval": 1, "timeout": 10, "retries": 0}}}
  }
}`, dir, bClosure, bLiveness)
	if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// TestApplyRollsOutThroughAgents applies a manifest of two services (b
// needs a) through nixmox-server to two real agents: real Nix builds, real
// profile switches, health checks; then the same manifest again, which
// changes nothing; then a generation of b that fails its health check,
// which b's agent rolls back, and apply exits 1 naming the cause.
func TestApplyRollsOutThroughAgents(t *testing.T) {
	testenv.RequireTool(t, "nix-build")
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	// The cache over HTTP on loopback, as agents on other hosts would use it.
	srv := run(t, "nixmox-server", "serve", "--state-dir", filepath.Join(dir, "server"), "--listen", "127.0.0.1:0", "--socket", socket,
		"--cache-listen", "127.0.0.1:0")
	line, _ := srv.await(t, 0, `serving: agents=127\.0\.0\.1:\d+`)
	addr := regexp.MustCompile(`agents=(127\.0\.0\.1:\d+)`).FindStringSubmatch(line)[1]
	cacheLine, _ := srv.await(t, 0, `binary cache: url=http://127\.0\.0\.1:\d+`)
	cacheURL := regexp.MustCompile(`url=(\S+)`).FindStringSubmatch(cacheLine)[1]
	next := 0
	for _, svc := range []string{"a", "b"} {
		next = startAgent(t, srv, dir, socket, addr, svc, next)
	}

	closure(t, dir, "a.nix", "a1", filepath.Join(dir, "a.active"))
	closure(t, dir, "b.nix", "b1", filepath.Join(dir, "b.active"))
	closure(t, dir, "b2.nix", "b2", filepath.Join(dir, "b.active"))
	m := filepath.Join(dir, "m.json")
	manifestJSON(t, m, "b.nix", "grep -qx b1 "+filepath.Join(dir, "b.active"), dir)

	apply := func() (string, int) {
		cmd := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", m, "--socket", socket)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("nixmox-cli apply (exit %d):\n%s", code, out)
		return string(out), code
	}

	watch := run(t, "nixmox-cli", "watch", "--socket", socket)
	watch.await(t, 0, `watching rollouts`)
	out, code := apply()
	// The watcher sees the same rollout.
	watch.await(t, 0, `verify:a +succeeded`)
	watch.await(t, 0, `rollout \d{8}T[\d.]+Z: 5 succeeded`)
	if code != 0 || !strings.Contains(out, "verify:b") || !strings.Contains(out, ": 5 succeeded") {
		t.Fatalf("first apply (exit %d):\n%s", code, out)
	}
	if read(t, filepath.Join(dir, "a.active")) != "a1" || read(t, filepath.Join(dir, "b.active")) != "b1" {
		t.Fatal("the closures were not activated")
	}
	// The agents pulled from the server's signed cache; it serves a's
	// closure over HTTP, signed with the server's key, into any store.
	srv.await(t, 0, `stage: service=a generation=1 stage=STAGE_PULLED`)
	srv.await(t, 0, `stage: service=b generation=1 stage=STAGE_PULLED`)
	aPath, err := exec.Command("nix-build", filepath.Join(dir, "a.nix"), "--no-out-link", "--option", "substituters", "").Output()
	if err != nil {
		t.Fatal(err)
	}
	pub := read(t, filepath.Join(dir, "server", "cache-key", "public-key"))
	if out, err := exec.Command("nix", "--extra-experimental-features", "nix-command", "copy", "--from", cacheURL,
		"--to", filepath.Join(dir, "other-store"), "--option", "require-sigs", "true", "--option", "trusted-public-keys", pub,
		strings.TrimSpace(string(aPath))).CombinedOutput(); err != nil {
		t.Fatalf("pulling from the HTTP cache: %v\n%s", err, out)
	}
	// a's deploy must be verified before b's starts.
	verifiedA, startedB := lineOf(out, `verify:a +succeeded`), lineOf(out, `nix:service-config:b +running`)
	if verifiedA < 0 || startedB < 0 || verifiedA > startedB {
		t.Errorf("b started (line %d) before a was verified (line %d):\n%s", startedB, verifiedA, out)
	}

	out, code = apply()
	if code != 0 || !strings.Contains(out, ": 5 unchanged") {
		t.Fatalf("unchanged apply (exit %d):\n%s", code, out)
	}
	// The same, as JSON.
	js, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", m, "--socket", socket, "--output", "json").Output()
	var sum struct {
		OK    bool `json:"ok"`
		Steps []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"steps"`
	}
	if err != nil || json.Unmarshal(js, &sum) != nil || !sum.OK || len(sum.Steps) != 5 || sum.Steps[4].ID != "verify:b" || sum.Steps[4].State != "unchanged" {
		t.Fatalf("apply --output json: %v\n%s", err, js)
	}

	manifestJSON(t, m, "b2.nix", "false", dir)
	out, code = apply()
	if code != 1 || !strings.Contains(out, "verify:b") || !strings.Contains(out, "the agent rolled b back: generation 2 is unhealthy: liveness `false` exited 1") {
		t.Fatalf("failing apply (exit %d):\n%s", code, out)
	}
	if read(t, filepath.Join(dir, "b.active")) != "b1" {
		t.Fatalf("b is on %q after its rollback, want b1", read(t, filepath.Join(dir, "b.active")))
	}

	// A healthy b3, then `rollback b`: back on b1's closure (the healthy
	// generation before b3), deployed and verified as generation 4.
	closure(t, dir, "b3.nix", "b3", filepath.Join(dir, "b.active"))
	manifestJSON(t, m, "b3.nix", "grep -qxE 'b1|b3' "+filepath.Join(dir, "b.active"), dir)
	if out, code = apply(); code != 0 || read(t, filepath.Join(dir, "b.active")) != "b3" {
		t.Fatalf("apply b3 (exit %d):\n%s", code, out)
	}
	rb, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "rollback", "b", "--socket", socket).CombinedOutput()
	if err != nil || !strings.Contains(string(rb), "rollback:b") || !strings.Contains(string(rb), "succeeded") {
		t.Fatalf("rollback: %v\n%s", err, rb)
	}
	if got := read(t, filepath.Join(dir, "b.active")); got != "b1" {
		t.Fatalf("after rollback b is on %q:\n%s", got, rb)
	}

	// The history has the five rollouts, newest first.
	hist, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "history", "--output", "json", "--socket", socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Rollouts []struct {
			OK       bool   `json:"ok"`
			Manifest string `json:"manifest"`
			Finished string `json:"finished"`
		} `json:"rollouts"`
	}
	if err := json.Unmarshal(hist, &h); err != nil || len(h.Rollouts) != 5 || !h.Rollouts[0].OK || h.Rollouts[1].OK || !h.Rollouts[2].OK ||
		h.Rollouts[0].Manifest != m || h.Rollouts[0].Finished == "" {
		t.Fatalf("history: %s (%v)", hist, err)
	}
	// The failed rollout's record names the cause.
	var ids struct {
		Rollouts []struct {
			ID string `json:"id"`
		} `json:"rollouts"`
	}
	_ = json.Unmarshal(hist, &ids)
	logs, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "logs", ids.Rollouts[1].ID, "verify:b", "--socket", socket).CombinedOutput()
	if err != nil || !strings.Contains(string(logs), "failed: the agent rolled b back: generation 2 is unhealthy") {
		t.Fatalf("logs: %v\n%s", err, logs)
	}

	// No rollout runs: there is nothing to unlock.
	if out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "unlock", "x", "--socket", socket).CombinedOutput(); err == nil || !strings.Contains(string(out), "no rollout holds the lock") {
		t.Fatalf("unlock: %v %s", err, out)
	}
}

// TestSecondApplyIsRefused: while a rollout runs, another apply is refused
// and names it; the first one then finishes.
func TestSecondApplyIsRefused(t *testing.T) {
	testenv.RequireTool(t, "nix-build")
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	srv := run(t, "nixmox-server", "serve", "--state-dir", filepath.Join(dir, "server"), "--listen", "127.0.0.1:0", "--socket", socket)
	line, _ := srv.await(t, 0, `serving: agents=127\.0\.0\.1:\d+`)
	addr := regexp.MustCompile(`agents=(127\.0\.0\.1:\d+)`).FindStringSubmatch(line)[1]
	enroll := filepath.Join(dir, "enroll.json")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "token", "a", "--socket", socket, "-o", enroll).CombinedOutput(); err != nil {
		t.Fatalf("token: %v\n%s", err, out)
	}
	run(t, "nixmox-agent", "--server", addr, "--service", "a", "--enroll-file", enroll,
		"--state-dir", filepath.Join(dir, "agent"), "--profile", filepath.Join(dir, "profiles", "system"))
	srv.await(t, 0, `agent connected: service=a`)

	// a's startup check waits for a file the test creates once it has
	// seen the second apply refused.
	flag := filepath.Join(dir, "go")
	closure(t, dir, "a.nix", "a1", filepath.Join(dir, "a.active"))
	m := filepath.Join(dir, "m.json")
	manifest := fmt.Sprintf(`{
  "network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "services": {"a": {"ip": "10.9.0.10", "hostname": "a.lab.test", "closure": "a.nix", "tags": ["web"],
    "interface": {"health": {"startup": "test -e %s", "interval": 1, "timeout": 300}}}}
}`, flag)
	if err := os.WriteFile(m, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	first := run(t, "nixmox-cli", "apply", "-f", m, "--socket", socket)
	first.await(t, 0, `verify:a +running`)

	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", m, "--socket", socket).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !regexp.MustCompile(`rollout \d{8}T[\d.]+Z is running`).Match(out) {
		t.Fatalf("second apply: %v\n%s", err, out)
	}
	// With --wait (and --on by tag) it queues behind, then runs.
	queued := run(t, "nixmox-cli", "apply", "-f", m, "--socket", socket, "--wait", "--on", "@web")
	queued.await(t, 0, `queued behind rollout \d{8}T`)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	first.await(t, 0, `: 3 succeeded`)
	queued.await(t, 0, `: 3 unchanged`)
}

// restartable returns a loopback agent address that stays the same across
// restarts (agents keep the address they were started with) and a func
// that starts nixmox-server on it, with its state in dir/server, and waits
// until it serves.
func restartable(t *testing.T, dir, socket string) (addr string, serve func() *proc) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = lis.Addr().String()
	lis.Close()
	return addr, func() *proc {
		p := run(t, "nixmox-server", "serve", "--state-dir", filepath.Join(dir, "server"), "--listen", addr, "--socket", socket)
		p.await(t, 0, `serving: agents=`)
		return p
	}
}

// TestServerKilledMidRollout SIGKILLs the server while an agent is still
// checking a generation; the restarted server resumes the rollout, skips
// what had succeeded, confirms the generation once the agent reports it
// healthy, and finishes it — and the apply that started it follows it
// across the restart and exits with its real end.
func TestServerKilledMidRollout(t *testing.T) {
	testenv.RequireTool(t, "nix-build")
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	addr, serve := restartable(t, dir, socket)
	srv := serve()
	for _, svc := range []string{"a", "b"} {
		startAgent(t, srv, dir, socket, addr, svc, 0)
	}
	flag := filepath.Join(dir, "go")
	closure(t, dir, "a.nix", "a1", filepath.Join(dir, "a.active"))
	closure(t, dir, "b.nix", "b1", filepath.Join(dir, "b.active"))
	m := filepath.Join(dir, "m.json")
	manifest := fmt.Sprintf(`{
  "network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "services": {
    "a": {"ip": "10.9.0.10", "hostname": "a.lab.test", "closure": "a.nix",
          "interface": {"health": {"liveness": "true", "interval": 1, "timeout": 10}}},
    "b": {"ip": "10.9.0.11", "hostname": "b.lab.test", "depends_on": ["a"], "closure": "b.nix",
          "interface": {"health": {"startup": "test -e %s", "interval": 1, "timeout": 300}}}}
}`, flag)
	if err := os.WriteFile(m, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := run(t, "nixmox-cli", "apply", "-f", m, "--socket", socket)
	apply.await(t, 0, `verify:b +running`)

	srv.kill()
	srv = serve()
	_, next := srv.await(t, 0, `resuming rollout`)
	srv.await(t, 0, `waiting for the agent to finish checking: service=b`)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv.await(t, next, `rollout finished: .*ok=true`)
	// The apply that started it followed the resumed rollout to its end.
	apply.await(t, 0, `following rollout \S+ when it is back`)
	apply.await(t, 0, `rollout \S+: .*succeeded`)
	<-apply.done
	if code := apply.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("apply exited %d after following the resumed rollout:\n%s", code, apply.log())
	}
	log := srv.log()
	for _, step := range []string{"tf:infra", "nix:service-config:a", "verify:a", "nix:service-config:b"} {
		if !strings.Contains(log, "step="+step+" state=skipped") || strings.Contains(log, "step="+step+" state=running") {
			t.Errorf("%s ran again after the restart:\n%s", step, log)
		}
	}
	if read(t, filepath.Join(dir, "b.active")) != "b1" {
		t.Errorf("b is on %q", read(t, filepath.Join(dir, "b.active")))
	}
	hist, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "history", "--output", "json", "--socket", socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Rollouts []struct {
			OK bool `json:"ok"`
		} `json:"rollouts"`
	}
	if err := json.Unmarshal(hist, &h); err != nil || len(h.Rollouts) != 1 || !h.Rollouts[0].OK {
		t.Fatalf("history: %s", hist)
	}
}

// TestServerKilledAtManyPoints kills the server with SIGKILL at every step
// transition of a rollout of five services (depth 3, two independent
// branches): after each kill the state file passes bbolt's consistency
// check, the restarted server resumes the rollout, and in the end it
// completes with no step run again after it had succeeded.
func TestServerKilledAtManyPoints(t *testing.T) {
	testenv.RequireTool(t, "nix-build")
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	stateDir := filepath.Join(dir, "server")
	addr, serve := restartable(t, dir, socket)
	srv := serve()
	services := []string{"a", "b", "c", "d", "e"}
	needs := map[string]string{"b": `["a"]`, "c": `["b"]`, "d": `["a"]`, "e": `["d"]`}
	var entries []string
	for i, svc := range services {
		startAgent(t, srv, dir, socket, addr, svc, 0)
		closure(t, dir, svc+".nix", svc+"1", filepath.Join(dir, svc+".active"))
		dep := needs[svc]
		if dep == "" {
			dep = "[]"
		}
		entries = append(entries, fmt.Sprintf(`%q: {"ip": "10.9.0.%d", "hostname": "%s.lab.test", "closure": "%s.nix", "depends_on": %s,
      "interface": {"health": {"liveness": "grep -qx %s1 %s", "interval": 1, "timeout": 30}}}`,
			svc, 10+i, svc, svc, dep, svc, filepath.Join(dir, svc+".active")))
	}
	m := filepath.Join(dir, "m.json")
	manifest := `{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "health_check_timeout": 120, "services": {` + strings.Join(entries, ",\n") + `}}`
	if err := os.WriteFile(m, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := run(t, "nixmox-cli", "apply", "-f", m, "--socket", socket)

	// Kill each server in turn at its first step start, then at its first
	// step success (which guarantees progress), and so on, until one
	// finishes the rollout.
	var logs []string
	kills := 0
	endedBeforeKill := false
	for {
		// The end: finished, or found finished by the restarted server (the
		// kill fell between recording the end and logging it).
		at := `state=succeeded|rollout finished|rollout already finished`
		if kills%2 == 0 {
			at = `state=running|rollout finished|rollout already finished`
		}
		line, _ := srv.await(t, 0, at)
		if strings.Contains(line, "finished") {
			break
		}
		srv.kill()
		apply.kill()
		kills++
		logs = append(logs, srv.log())
		st, err := store.Open(filepath.Join(stateDir, "state.db"))
		if err != nil {
			t.Fatalf("after kill %d: %v", kills, err)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("after kill %d the state file is inconsistent: %v", kills, err)
		}
		holder, err := st.LockHolder()
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		srv = serve()
		if holder == "" {
			// The rollout ended, lock released, between the line seen and
			// the kill: the killed server logged its end.
			endedBeforeKill = true
			break
		}
	}
	if endedBeforeKill {
		if !regexp.MustCompile(`rollout finished.*ok=true`).MatchString(logs[len(logs)-1]) {
			t.Fatalf("no lock after kill %d, but the rollout did not finish:\n%s", kills, logs[len(logs)-1])
		}
	} else {
		srv.await(t, 0, `rollout (already )?finished.*ok=true`)
	}
	logs = append(logs, srv.log())
	if kills < 5 {
		t.Errorf("only %d kills: the rollout had too few transitions to test", kills)
	}
	t.Logf("killed the server %d times", kills)
	succeeded := map[string]bool{}
	rx := regexp.MustCompile(`step=(\S+) state=(running|succeeded)`)
	for _, l := range logs {
		for _, mm := range rx.FindAllStringSubmatch(l, -1) {
			step, state := mm[1], mm[2]
			if state == "running" && succeeded[step] {
				t.Errorf("%s ran again after it had succeeded", step)
			}
			if state == "succeeded" {
				succeeded[step] = true
			}
		}
	}
	for _, svc := range services {
		if got := read(t, filepath.Join(dir, svc+".active")); got != svc+"1" {
			t.Errorf("%s is on %q", svc, got)
		}
		if !succeeded["verify:"+svc] {
			t.Errorf("verify:%s never succeeded", svc)
		}
	}
}

// lineOf is the number of the first line of out matching re, -1 if none.
func lineOf(out, re string) int {
	rx := regexp.MustCompile(re)
	for i, line := range strings.Split(out, "\n") {
		if rx.MatchString(line) {
			return i
		}
	}
	return -1
}
