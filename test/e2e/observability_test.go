package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
)

// TestAlertRules checks the shipped alerting rules with promtool: they
// parse, and their unit tests (observability/alerts_test.yml) pass.
func TestAlertRules(t *testing.T) {
	testenv.RequireTool(t, "promtool")
	dir := filepath.Join(fixtures.Root(), "observability")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// observed is a server with two agents that has rolled a manifest out,
// with its status page and /metrics on httpAddr.
type observed struct {
	dir, socket, httpAddr string
	srv                   *proc
}

// newObserved starts a server (debug log: it says when /metrics is
// scraped) and agents a and b, each with a closure whose liveness is
// checked every second; apply runs once Prometheus (if any) scrapes.
func newObserved(t *testing.T) *observed {
	t.Helper()
	testenv.RequireTool(t, "nix-build")
	o := &observed{dir: t.TempDir()}
	o.socket = filepath.Join(o.dir, "control.sock")
	o.httpAddr = strings.Replace(freePort(t), "0.0.0.0", "127.0.0.1", 1)
	o.srv = run(t, "nixmox-server", "serve", "--state-dir", filepath.Join(o.dir, "server"), "--listen", "127.0.0.1:0",
		"--socket", o.socket, "--http-listen", o.httpAddr, "--log-level", "debug")
	line, _ := o.srv.await(t, 0, `serving: agents=`)
	agents := regexp.MustCompile(`agents=(\S+)`).FindStringSubmatch(line)[1]
	var entries []string
	for i, svc := range []string{"a", "b"} {
		startAgent(t, o.srv, o.dir, o.socket, agents, svc, 0)
		active := filepath.Join(o.dir, svc+".active")
		closure(t, o.dir, svc+".nix", svc+"1", active)
		entries = append(entries, fmt.Sprintf(`%q: {"ip": "10.9.0.%d", "hostname": "%s.lab.test", "closure": "%s.nix",
      "interface": {"health": {"liveness": "grep -qx %s1 %s", "interval": 1, "timeout": 30}}}`, svc, 10+i, svc, svc, svc, active))
	}
	m := `{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "services": {` + strings.Join(entries, ",") + `}}`
	if err := os.WriteFile(filepath.Join(o.dir, "m.json"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *observed) apply(t *testing.T) {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "apply", "-f", filepath.Join(o.dir, "m.json"), "--socket", o.socket).CombinedOutput()
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
}

// TestDashboardQueriesReturnData runs a real Prometheus scraping a real
// nixmox-server that rolls out two services through real agents, then
// evaluates every query of every panel of the shipped Grafana dashboard:
// each returns data, and at least one number. It also checks that /metrics
// says what `nixmox-cli status` says.
func TestDashboardQueriesReturnData(t *testing.T) {
	testenv.RequireTool(t, "prometheus")
	o := newObserved(t)
	promAddr := strings.Replace(freePort(t), "0.0.0.0", "127.0.0.1", 1)
	conf := filepath.Join(o.dir, "prometheus.yml")
	alerts := filepath.Join(fixtures.Root(), "observability", "alerts.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: nixmox
    static_configs: [{targets: [%q]}]
`, alerts, o.httpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := run(t, "prometheus", "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(o.dir, "tsdb"),
		"--web.listen-address="+promAddr)
	prom.await(t, 0, `Server is ready to receive web requests`)
	o.srv.await(t, 0, `metrics scraped`)
	o.apply(t)
	// Three scrapes after the rollout: rates and increases have their
	// samples on both sides of it.
	from := o.srv.mark()
	for range 3 {
		_, from = o.srv.await(t, from, `metrics scraped`)
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	data, err := os.ReadFile(filepath.Join(fixtures.Root(), "observability", "grafana-dashboard.json"))
	if err != nil || json.Unmarshal(data, &dash) != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard: %v", err)
	}
	queries := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			queries++
			values := promQuery(t, promAddr, target.Expr)
			number := false
			for _, v := range values {
				number = number || !math.IsNaN(v)
			}
			if len(values) == 0 || !number {
				t.Errorf("panel %q: %s returned %v", p.Title, target.Expr, values)
			}
		}
	}
	t.Logf("%d panels, %d queries, each with data", len(dash.Panels), queries)

	// /metrics says what the test knows happened — not only what
	// `nixmox-cli status` says, which comes from the same code: one rollout
	// of two services, each built, handed out, verified healthy on
	// generation 1, its agent connected.
	metrics := scrape(t, o.httpAddr)
	want := map[string]float64{
		`nixmox_rollouts_total{result="ok"}`:                               1,
		`nixmox_rollouts_total{result="failed"}`:                           0,
		`nixmox_rollout_duration_seconds_count`:                            1,
		`nixmox_steps_total{phase="tf:infra",state="succeeded"}`:           1,
		`nixmox_steps_total{phase="nix:service-config",state="succeeded"}`: 2,
		`nixmox_steps_total{phase="verify",state="succeeded"}`:             2,
		`nixmox_steps_total{phase="verify",state="failed"}`:                0,
		`nixmox_step_duration_seconds_count{phase="verify"}`:               2,
		`nixmox_rollout_running`:                                           0,
	}
	for _, svc := range []string{"a", "b"} {
		want[`nixmox_service_up{service="`+svc+`"}`] = 1
		want[`nixmox_service_active_generation{service="`+svc+`"}`] = 1
		want[`nixmox_service_desired_generation{service="`+svc+`"}`] = 1
		want[`nixmox_service_health{health="healthy",service="`+svc+`"}`] = 1
		want[`nixmox_agent_connected{service="`+svc+`"}`] = 1
	}
	for name, v := range want {
		if got, ok := metrics[name]; !ok || got != v {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, v)
		}
	}
	// Each agent's checks reached the latency histogram.
	for _, svc := range []string{"a", "b"} {
		if n := metrics[`nixmox_health_check_duration_seconds_count{check="liveness",service="`+svc+`"}`]; n < 1 {
			t.Errorf("no liveness latency samples of %s", svc)
		}
	}
	// And status agrees with both.
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "status", "--output", "json", "--socket", o.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Services []struct {
			Name       string `json:"name"`
			Health     string `json:"health"`
			Generation int64  `json:"generation"`
			Connected  bool   `json:"agent_connected"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st.Services) != 2 {
		t.Fatalf("status: %v %s", err, out)
	}
	for _, s := range st.Services {
		if s.Health != "healthy" || s.Generation != 1 || !s.Connected {
			t.Errorf("status of %s: %+v", s.Name, s)
		}
	}

	// Every metric the alerting rules and the dashboard name is one the
	// server exports (the rules' unit tests use hand-written series).
	exported := map[string]bool{}
	for name := range metrics {
		base := name
		if i := strings.IndexByte(base, '{'); i >= 0 {
			base = base[:i]
		}
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		exported[base] = true
	}
	for _, file := range []string{"alerts.yml", "grafana-dashboard.json"} {
		text, err := os.ReadFile(filepath.Join(fixtures.Root(), "observability", file))
		if err != nil {
			t.Fatal(err)
		}
		names := regexp.MustCompile(`\bnixmox_[a-z_]+`).FindAllString(string(text), -1)
		if len(names) == 0 {
			t.Errorf("%s names no nixmox metric", file)
		}
		for _, n := range names {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				n = strings.TrimSuffix(n, suffix)
			}
			if !exported[n] {
				t.Errorf("%s uses %s, which the server does not export", file, n)
			}
		}
	}
}

// promQuery evaluates expr now and returns the values of its result.
func promQuery(t *testing.T, addr, expr string) []float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", expr, err, r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if fmt.Sprint(s.Value[1]) == "NaN" {
			v = math.NaN()
		}
		out = append(out, v)
	}
	return out
}

// scrape reads /metrics into name{labels} -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
