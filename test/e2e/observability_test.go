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

	// /metrics and `nixmox-cli status` agree.
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "status", "--output", "json", "--socket", o.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Services []struct {
			Name       string `json:"name"`
			Health     string `json:"health"`
			Generation int64  `json:"generation"`
			Desired    int64  `json:"desired_generation"`
			Connected  bool   `json:"agent_connected"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st.Services) != 2 {
		t.Fatalf("status: %v %s", err, out)
	}
	metrics := scrape(t, o.httpAddr)
	for _, s := range st.Services {
		up := 0.0
		if s.Health == "healthy" && s.Connected {
			up = 1
		}
		for name, want := range map[string]float64{
			`nixmox_service_up{service="` + s.Name + `"}`:                               up,
			`nixmox_service_active_generation{service="` + s.Name + `"}`:                float64(s.Generation),
			`nixmox_service_desired_generation{service="` + s.Name + `"}`:               float64(s.Desired),
			`nixmox_service_health{health="` + s.Health + `",service="` + s.Name + `"}`: 1,
			`nixmox_agent_connected{service="` + s.Name + `"}`:                          map[bool]float64{true: 1, false: 0}[s.Connected],
		} {
			if got, ok := metrics[name]; !ok || got != want {
				t.Errorf("%s = %v (present %t), status says %v", name, got, ok, want)
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
