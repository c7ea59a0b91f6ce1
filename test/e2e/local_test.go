package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// The local homelab runs on its own subnet, bridge and namespace names so
// that it never meets a `make demo` running on the same machine.
const (
	e2eNet    = "10.232.7"
	e2eBridge = "nxe2e0"
	e2eNetns  = "nxe2e-"
)

// localTools are the programs the local example's daemons and checks
// need; make test installs them.
var localTools = []string{"ip", "nix-build", "terraform", "caddy", "unbound", "nginx", "prometheus",
	"/usr/lib/postgresql/15/bin/postgres", "psql", "pg_isready", "dig", "curl", "setpriv"}

func needLocal(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "the local provider needs root (network namespaces); make test runs as root")
	testenv.RequireTool(t, localTools...)
}

// homelab is examples/local, copied and moved to the test's subnet, run by
// a nixmox-server with the local provider.
type homelab struct {
	t        testing.TB
	dir      string // the example's copy
	state    string // the server's state directory
	data     string // the local provider's data directory
	socket   string
	planned  int    // the steps of the manifest's plan
	agents   string // the server's agent listener, gateway:port
	cache    string // its binary cache, gateway:port
	manifest string
	srv      *proc
	serve    func() *proc
}

func newHomelab(t testing.TB) *homelab {
	t.Helper()
	needLocal(t)
	h := &homelab{t: t, dir: t.TempDir()}
	src := filepath.Join(fixtures.Root(), "examples", "local")
	if out, err := exec.Command("cp", "-r", src+"/.", h.dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the example: %v %s", err, out)
	}
	h.manifest = filepath.Join(h.dir, "homelab.nix")
	h.edit(t, `net = "10.231.0";`, `net = "`+e2eNet+`";`)
	h.start()
	return h
}

// start plans h.manifest and starts a server with the local provider on
// it, taken down at the test's end.
func (h *homelab) start() {
	t := h.t
	var plan struct{ Steps []json.RawMessage }
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "plan", "-f", h.manifest, "--format", "json").Output()
	if err := errors.Join(err, json.Unmarshal(out, &plan)); err != nil || len(plan.Steps) == 0 {
		t.Fatalf("the example's plan: %v\n%s", err, out)
	}
	h.planned = len(plan.Steps)
	h.state = filepath.Join(t.TempDir(), "server")
	// Daemons that drop root (PostgreSQL) must reach their data: a
	// world-traversable directory outside the test's owner-only ones.
	data, err := os.MkdirTemp("", "nixmox-e2e-data-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	h.data = data
	h.socket = filepath.Join(t.TempDir(), "control.sock")
	// The same ports across server restarts, as a real server's: agents
	// keep the address they were started with. Like make demo, the server
	// listens on the bridge's gateway only, bound before the bridge exists.
	agents, cache := gatewayPort(t), gatewayPort(t)
	h.agents, h.cache = agents, cache
	h.serve = func() *proc {
		p := run(t, "nixmox-server", "serve", "--state-dir", h.state, "--listen", agents, "--cache-listen", cache,
			"--socket", h.socket, "--provider", "local", "--local-bridge", e2eBridge, "--local-netns-prefix", e2eNetns,
			"--local-data-dir", h.data, "--confirm-timeout", "5s")
		p.await(t, 0, `serving: agents=`)
		return p
	}
	h.srv = h.serve()
	t.Cleanup(h.down)
}

// freePort is an address on every interface with a port free now.
func freePort(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// gatewayPort is the homelab's gateway with a port free now.
func gatewayPort(t testing.TB) string {
	_, port, _ := net.SplitHostPort(freePort(t))
	return net.JoinHostPort(e2eNet+".1", port)
}

// down removes everything and checks that nothing is left.
func (h *homelab) down() {
	t := h.t
	h.srv.kill()
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "local", "down", "--state-dir", h.state).CombinedOutput()
	if err != nil {
		t.Errorf("local down: %v\n%s", err, out)
	}
	os.RemoveAll(h.data)
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), e2eNetns) {
		t.Errorf("namespaces left behind:\n%s", out)
	}
	if err := exec.Command("ip", "link", "show", "dev", e2eBridge).Run(); err == nil {
		t.Errorf("bridge %s left behind", e2eBridge)
	}
	// No live process of the test: agents and daemons name its directories.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil || len(cmdline) == 0 {
			continue // gone, or a zombie
		}
		if bytes.Contains(cmdline, []byte(h.state)) || bytes.Contains(cmdline, []byte(h.data)) || bytes.Contains(cmdline, []byte(bin)) {
			t.Errorf("process left behind: %s", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}

// edit replaces old with new in the manifest (or another file of the
// example, with a path).
func (h *homelab) edit(t testing.TB, old, new string, file ...string) {
	t.Helper()
	path := h.manifest
	if len(file) > 0 {
		path = filepath.Join(h.dir, file[0])
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

type applyResult struct {
	code    int
	out     string
	Rollout string `json:"rollout"`
	OK      bool   `json:"ok"`
	Summary string `json:"summary"`
	Steps   []struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Cause string `json:"cause"`
		Needs string `json:"needs"`
		Root  string `json:"root"`
	} `json:"steps"`
}

// states is each step's final state; it fails the test unless the rollout
// reported every step of the plan, so a check over the states cannot pass
// on a rollout that reported fewer.
func (h *homelab) states(t testing.TB, r applyResult) map[string]string {
	t.Helper()
	st := r.states()
	if len(st) != h.planned {
		t.Errorf("the rollout reported %d steps, the plan has %d:\n%s", len(st), h.planned, r.out)
	}
	return st
}

func (r applyResult) states() map[string]string {
	m := map[string]string{}
	for _, s := range r.Steps {
		m[s.ID] = s.State
	}
	return m
}

// apply runs nixmox-cli apply --output json and returns its summary.
func (h *homelab) apply() applyResult {
	h.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", h.manifest, "--socket", h.socket, "--output", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := applyResult{out: stdout.String() + stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
		h.t.Fatalf("apply: %v\n%s", jerr, r.out)
	}
	return r
}

func (h *homelab) cli(args ...string) string {
	h.t.Helper()
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), append(args, "--socket", h.socket)...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("nixmox-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// https fetches a domain's page through Caddy, trusting Caddy's own CA.
func (h *homelab) https(domain, path string) (string, error) {
	ca := filepath.Join(h.data, "caddy", "xdg-data", "caddy", "pki", "authorities", "local", "root.crt")
	out, err := exec.Command("curl", "-fsS", "--max-time", "10", "--cacert", ca,
		"--resolve", domain+":443:"+e2eNet+".4", "https://"+domain+path).CombinedOutput()
	return string(out), err
}

func (h *homelab) webPage() string {
	h.t.Helper()
	out, err := exec.Command("curl", "-fsS", "--max-time", "10", "http://"+e2eNet+".10/").CombinedOutput()
	if err != nil {
		h.t.Fatalf("web: %v %s", err, out)
	}
	return string(out)
}

func generation(t *testing.T, socket, svc string) *nixmoxv1.ServiceStatus {
	t.Helper()
	s := status(t, socket)[svc]
	if s == nil {
		t.Fatalf("no status for %s", svc)
	}
	return s
}

// TestLocalHomelab rolls examples/local out with the local provider and
// real daemons, checks it from outside, then changes it in the ways a
// homelab changes: one service's config, a generation that fails its
// checks, one that cuts its agent off, a server killed mid-rollout, an
// agent that dies. It runs as one test because each part starts from the
// state the one before left.
func TestLocalHomelab(t *testing.T) {
	h := newHomelab(t)

	first := time.Now()
	r := h.apply()
	if r.code != 0 || !r.OK {
		t.Fatalf("first rollout: exit %d\n%s\nserver:\n%s", r.code, r.out, h.srv.log())
	}
	t.Logf("first rollout: %s (%s)", time.Since(first).Round(time.Millisecond), r.Summary)

	t.Run("from outside", func(t *testing.T) {
		for url, want := range map[string]string{"www.home.arpa/": "Hello from nixmox", "wiki.home.arpa/": "<h1>wiki</h1>", "prometheus.home.arpa/-/ready": "Prometheus Server is Ready"} {
			domain, path, _ := strings.Cut(url, "/")
			page, err := h.https(domain, "/"+path)
			if err != nil || !strings.Contains(page, want) {
				t.Errorf("https://%s through Caddy: %v\n%s", domain, err, page)
			}
		}
		// Every A record and every CNAME, from the DNS service.
		for name, want := range map[string]string{
			"dns.home.arpa": e2eNet + ".2", "postgresql.home.arpa": e2eNet + ".3", "caddy.home.arpa": e2eNet + ".4",
			"web.home.arpa": e2eNet + ".10", "wiki.home.arpa": e2eNet + ".11", "monitoring.home.arpa": e2eNet + ".12",
			"www.home.arpa": "caddy.home.arpa.\n" + e2eNet + ".4", "prometheus.home.arpa": "caddy.home.arpa.\n" + e2eNet + ".4",
		} {
			out, err := exec.Command("dig", "+short", "+time=5", "@"+e2eNet+".2", name).Output()
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("dig %s = %q, %v; want %q", name, out, err, want)
			}
		}
		// The wiki's database exists and its owner logs in.
		out, err := exec.Command("psql", "-h", e2eNet+".3", "-U", "wiki", "-d", "wiki", "-tAc", "select current_user").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "wiki" {
			t.Errorf("psql as wiki: %v %s", err, out)
		}
		var st struct {
			Services []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
				Gen    int64  `json:"generation"`
				Agent  bool   `json:"agent_connected"`
			} `json:"services"`
		}
		if err := json.Unmarshal([]byte(h.cli("status", "--output", "json")), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Services) != 6 {
			t.Errorf("status lists %d services, want 6", len(st.Services))
		}
		for _, s := range st.Services {
			if s.Health != "healthy" || s.Gen != 1 || !s.Agent {
				t.Errorf("status of %s: %+v", s.Name, s)
			}
		}
	})

	t.Run("the server listens on the gateway only", func(t *testing.T) {
		out, err := exec.Command("ss", "-ltnH").Output()
		if err != nil {
			t.Fatalf("ss -ltnH: %v", err)
		}
		for _, addr := range []string{h.agents, h.cache} {
			_, port, _ := net.SplitHostPort(addr)
			var local []string
			for _, line := range strings.Split(string(out), "\n") {
				// State Recv-Q Send-Q Local:Port Peer:Port
				if f := strings.Fields(line); len(f) >= 4 && strings.HasSuffix(f[3], ":"+port) {
					local = append(local, f[3])
				}
			}
			if len(local) != 1 || local[0] != addr {
				t.Errorf("listening on port %s: %q, want only %s\n%s", port, local, addr, out)
			}
		}
		// The cache answers what Nix asks for by name, and lists nothing.
		for path, want := range map[string]int{"/": 404, "/nar/": 404, "/nix-cache-info": 200} {
			resp, err := http.Get("http://" + h.cache + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET http://%s%s: %d %q, want %d", h.cache, path, resp.StatusCode, body, want)
			}
		}
	})

	t.Run("outputs and secrets", func(t *testing.T) {
		// The title is web's Terraform output; the token its sensitive one,
		// which only web's agent received.
		token, err := os.ReadFile(filepath.Join(h.state, "local", "agents", "web", "secrets", "token"))
		if err != nil || len(token) < 16 {
			t.Fatalf("web's secret: %q %v", token, err)
		}
		code := func(auth string) string {
			args := []string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://" + e2eNet + ".10/private"}
			if auth != "" {
				args = append(args, "-H", "Authorization: Bearer "+auth)
			}
			out, _ := exec.Command("curl", args...).Output()
			return string(out)
		}
		if code("") != "401" || code(string(token)) != "200" {
			t.Errorf("/private: %s without the token, %s with it", code(""), code(string(token)))
		}
		for _, svc := range []string{"dns", "wiki", "monitoring"} {
			if entries, _ := os.ReadDir(filepath.Join(h.state, "local", "agents", svc, "secrets")); len(entries) != 0 {
				t.Errorf("%s received secrets: %v", svc, entries)
			}
		}
		db, err := os.ReadFile(filepath.Join(h.state, "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(db, token) || strings.Contains(h.srv.log(), string(token)) || strings.Contains(r.out, string(token)) {
			t.Error("the secret is in the state file, the server's log or apply's output")
		}
		// nixmox-cli outputs names the secret, never shows it.
		outs := h.cli("outputs", "web")
		if !regexp.MustCompile(`terraform/services/web +title +"Hello from nixmox"`).MatchString(outs) ||
			!regexp.MustCompile(`terraform/services/web +token +\(sensitive\)`).MatchString(outs) || strings.Contains(outs, string(token)) {
			t.Errorf("outputs web:\n%s", outs)
		}
		logs, _ := filepath.Glob(filepath.Join(h.state, "work", "logs", "*", "*.log"))
		for _, l := range logs {
			if data, _ := os.ReadFile(l); bytes.Contains(data, token) {
				t.Errorf("the secret is in %s", l)
			}
		}
	})

	t.Run("unchanged manifest is a no-op", func(t *testing.T) {
		start := time.Now()
		r := h.apply()
		if r.code != 0 || !r.OK {
			t.Fatalf("exit %d\n%s", r.code, r.out)
		}
		for id, st := range h.states(t, r) {
			if st != "unchanged" {
				t.Errorf("%s %s", id, st)
			}
		}
		t.Logf("unchanged apply: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("one service changes", func(t *testing.T) {
		h.edit(t, `title = "Hello from nixmox";`, `title = "Changed by nixmox";`)
		r := h.apply()
		if r.code != 0 || !r.OK {
			t.Fatalf("exit %d\n%s", r.code, r.out)
		}
		for id, st := range h.states(t, r) {
			ran := st != "unchanged"
			if want := strings.HasSuffix(id, ":web"); ran != want {
				t.Errorf("%s %s", id, st)
			}
		}
		if page := h.webPage(); !strings.Contains(page, "Changed by nixmox") {
			t.Errorf("web serves:\n%s", page)
		}
		if s := generation(t, h.socket, "web"); s.GetGeneration() != 2 {
			t.Errorf("web is on generation %d, want 2", s.GetGeneration())
		}
	})

	t.Run("unhealthy generation is rolled back", func(t *testing.T) {
		// The title no longer says nixmox: web's liveness check fails.
		h.edit(t, `title = "Changed by nixmox";`, `title = "Broken";`)
		from := h.srv.mark()
		r := h.apply()
		if r.code != 1 || r.OK {
			t.Fatalf("exit %d, want 1\n%s", r.code, r.out)
		}
		st := h.states(t, r)
		if st["verify:web"] != "failed" || st["nix:service-config:monitoring"] != "held" || st["verify:wiki"] != "unchanged" {
			t.Errorf("states: %v", st)
		}
		// The failed check is named once, on verify:web; monitoring says
		// what it waits for.
		var webCause string
		var held struct{ cause, needs, root string }
		for _, s := range r.Steps {
			switch s.ID {
			case "verify:web":
				webCause = s.Cause
			case "nix:service-config:monitoring":
				held.cause, held.needs, held.root = s.Cause, s.Needs, s.Root
			}
		}
		if !strings.Contains(webCause, "web") || !strings.Contains(webCause, "unhealthy") {
			t.Errorf("verify:web failed with cause %q, want web's failed check named", webCause)
		}
		if held.cause != "needs verify:web (failed)" || held.needs != "verify:web" || held.root != "verify:web" {
			t.Errorf("monitoring held with %+v, want it to need verify:web (failed)", held)
		}
		// Back on the previous generation, and healthy there.
		if page := h.webPage(); !strings.Contains(page, "Changed by nixmox") {
			t.Errorf("after the rollback web serves:\n%s", page)
		}
		// The agent stops checking during the switch and checks the
		// generation it went back to afresh: its first result is reported.
		_, from = h.srv.await(t, from, `stage: service=web generation=3 stage=STAGE_ROLLED_BACK`)
		h.srv.await(t, from, `health: service=web check=liveness health=HEALTH_HEALTHY`)
		if s := generation(t, h.socket, "web"); s.GetGeneration() != 2 || s.GetHealth() != nixmoxv1.Health_HEALTH_HEALTHY {
			t.Errorf("web after the rollback: generation %d, %s", s.GetGeneration(), s.GetHealth())
		}
		h.edit(t, `title = "Broken";`, `title = "Changed by nixmox";`)
	})

	t.Run("a generation that cuts the agent off is reverted", func(t *testing.T) {
		// Its activation blackholes the route to the server: healthy
		// locally, never confirmed.
		h.edit(t, `lib.nginx {`, `lib.nginx { post = "ip route add blackhole ${lib.self.gateway}/32";`, "closures/web.nix")
		start := time.Now()
		r := h.apply()
		if r.code != 1 || r.OK {
			t.Fatalf("exit %d, want 1\n%s", r.code, r.out)
		}
		cause := ""
		for _, s := range r.Steps {
			if s.ID == "verify:web" {
				cause = s.Cause
			}
		}
		if !strings.Contains(cause, "not confirmed by the server within 5s") {
			t.Errorf("verify:web failed with %q", cause)
		}
		t.Logf("cut off and reverted in %s", time.Since(start).Round(time.Millisecond))
		if out, err := exec.Command("ip", "-n", e2eNetns+"web", "route", "show", "type", "blackhole").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("the blackhole route is still there (or web's namespace is gone): %v %s", err, out)
		}
		if s := generation(t, h.socket, "web"); s.GetGeneration() != 2 || !s.GetAgentConnected() {
			t.Errorf("web after the revert: generation %d, connected %t", s.GetGeneration(), s.GetAgentConnected())
		}
		h.edit(t, `lib.nginx { post = "ip route add blackhole ${lib.self.gateway}/32";`, `lib.nginx {`, "closures/web.nix")
	})

	t.Run("server killed mid-rollout", func(t *testing.T) {
		// web is on a closure it failed with; its steps run again. The
		// server dies while web's new generation is being verified.
		h.edit(t, `title = "Changed by nixmox";`, `title = "Again from nixmox";`)
		before := generation(t, h.socket, "web").GetDesiredGeneration()
		from := h.srv.mark()
		apply := run(t, "nixmox-cli", "apply", "-f", h.manifest, "--socket", h.socket)
		h.srv.await(t, from, `step=verify:web state=running`)
		h.srv.kill()
		apply.kill()
		h.srv = h.serve()
		resumed, _ := h.srv.await(t, 0, `resuming rollout: rollout=\S+`)
		id := regexp.MustCompile(`rollout=(\S+)`).FindStringSubmatch(resumed)[1]
		h.srv.await(t, 0, `rollout finished: .*ok=true`)
		log := h.srv.log()
		for _, step := range []string{"tf:infra", "nix:core:dns", "verify:dns", "tf:service-infra:web", "nix:service-config:web"} {
			if !strings.Contains(log, "step="+step+" state=skipped") || strings.Contains(log, "step="+step+" state=running") {
				t.Errorf("%s ran again after the restart:\n%s", step, log)
			}
		}
		if s := generation(t, h.socket, "web"); s.GetDesiredGeneration() != before+1 || s.GetGeneration() != before+1 {
			t.Errorf("web: desired %d, active %d; want both %d (one new generation)", s.GetDesiredGeneration(), s.GetGeneration(), before+1)
		}
		if page := h.webPage(); !strings.Contains(page, "Again from nixmox") {
			t.Errorf("web serves:\n%s", page)
		}
		// History's newest rollout is the one the killed server started and
		// the restarted one finished, and it ended well.
		var hist struct {
			Rollouts []struct {
				ID string `json:"id"`
				OK bool   `json:"ok"`
			} `json:"rollouts"`
		}
		if err := json.Unmarshal([]byte(h.cli("history", "--output", "json")), &hist); err != nil || len(hist.Rollouts) == 0 ||
			hist.Rollouts[0].ID != id || !hist.Rollouts[0].OK {
			t.Errorf("history: %+v, %v; want %s first and ok", hist, err, id)
		}
	})

	t.Run("an agent that dies is restarted, as systemd would", func(t *testing.T) {
		var inv struct {
			Services map[string]struct {
				PID int `json:"pid"`
			} `json:"services"`
		}
		data, err := os.ReadFile(filepath.Join(h.state, "local", "inventory.json"))
		if err != nil || json.Unmarshal(data, &inv) != nil {
			t.Fatalf("inventory: %v", err)
		}
		from := h.srv.mark()
		if err := exec.Command("kill", "-9", fmt.Sprint(inv.Services["wiki"].PID)).Run(); err != nil {
			t.Fatal(err)
		}
		// The server sees it go, and its supervisor starts it again — no
		// apply needed.
		_, next := h.srv.await(t, from, `agent disconnected: service=wiki`)
		h.srv.await(t, next, `the agent of wiki had died: restarted it`)
		h.srv.await(t, next, `agent connected: service=wiki`)
		h.srv.await(t, next, `service=wiki .*health=HEALTH_HEALTHY`)
		if s := generation(t, h.socket, "wiki"); !s.GetAgentConnected() || s.GetHealth() != nixmoxv1.Health_HEALTH_HEALTHY || s.GetGeneration() != 1 {
			t.Errorf("wiki after its agent was restarted: %v", s)
		}
		// Nothing drifted: the next apply changes nothing.
		r := h.apply()
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.out)
		}
		for id, st := range h.states(t, r) {
			if st != "unchanged" {
				t.Errorf("%s %s", id, st)
			}
		}
	})
}

// BenchmarkLocalHomelab: the first rollout of examples/local (reported as
// first-rollout-s), then applying it unchanged (ns/op; target under 2 s).
func BenchmarkLocalHomelab(b *testing.B) {
	h := newHomelab(b)
	start := time.Now()
	if r := h.apply(); r.code != 0 {
		b.Fatalf("first rollout: exit %d\n%s", r.code, r.out)
	}
	first := time.Since(start)
	for b.Loop() {
		if r := h.apply(); r.code != 0 || !strings.Contains(r.Summary, "14 unchanged") {
			b.Fatalf("unchanged apply: exit %d, %s", r.code, r.Summary)
		}
	}
	b.ReportMetric(first.Seconds(), "first-rollout-s")
}
