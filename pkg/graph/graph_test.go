package graph_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// chain builds a JSON manifest whose services depend on each other as deps
// says (name -> names), all application services behind no proxy.
func build(t *testing.T, deps map[string][]string) (*graph.Graph, error) {
	t.Helper()
	var svcs []string
	i := 10
	for name, ds := range deps {
		q := make([]string, len(ds))
		for k, d := range ds {
			q[k] = fmt.Sprintf("%q", d)
		}
		svcs = append(svcs, fmt.Sprintf(`%q: {"ip": "10.0.%d.%d", "hostname": "%s.x", "depends_on": [%s]}`,
			name, i/250, i%250+1, name, strings.Join(q, ",")))
		i++
	}
	m, err := manifest.Parse([]byte(`{"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/16"},
		"services": {`+strings.Join(svcs, ",")+`}}`), manifest.FormatJSON, "g.json")
	if err != nil {
		t.Fatal(err)
	}
	return graph.New(m)
}

func TestLayersAndCriticalPath(t *testing.T) {
	g, err := build(t, map[string][]string{
		"a": nil, "b": {"a"}, "c": {"b"}, "d": {"a"}, "e": nil, "f": {"c", "e"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var layers []string
	for _, l := range g.Layers() {
		layers = append(layers, strings.Join(l, ","))
	}
	if got, want := strings.Join(layers, " | "), "a,e | b,d | c | f"; got != want {
		t.Errorf("layers = %s, want %s", got, want)
	}
	if got, want := strings.Join(g.CriticalPath(), ">"), "a>b>c>f"; got != want {
		t.Errorf("critical path = %s, want %s", got, want)
	}
	if got, want := strings.Join(g.Order(), ","), "a,e,b,d,c,f"; got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	if got, want := strings.Join(g.Closure("c", "d"), ","), "a,b,d,c"; got != want {
		t.Errorf("closure = %s, want %s", got, want)
	}
}

func TestCycles(t *testing.T) {
	_, err := build(t, map[string][]string{
		"a": {"b"}, "b": {"c"}, "c": {"a"}, // a 3-cycle
		"x": {"y"}, "y": {"x", "a"}, // a 2-cycle hanging off it
		"ok": nil,
	})
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		"services.a.depends_on[0]: dependency cycle: a → b → c → a",
		"services.x.depends_on[0]: dependency cycle: x → y → x",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "dependency cycle") != 2 {
		t.Errorf("want exactly two cycles:\n%s", got)
	}
}

// TestLongCycle makes sure a cycle through thousands of services is found
// without exhausting the stack and printed in full.
func TestLongCycle(t *testing.T) {
	const n = 5000
	deps := map[string][]string{}
	for i := 0; i < n; i++ {
		deps[fmt.Sprintf("s%04d", i)] = []string{fmt.Sprintf("s%04d", (i+1)%n)}
	}
	_, err := build(t, deps)
	if err == nil || !strings.Contains(err.Error(), "s0000 → s0001 → s0002") || !strings.Contains(err.Error(), "s4999 → s0000") {
		t.Fatalf("error = %.300v", err)
	}
}
