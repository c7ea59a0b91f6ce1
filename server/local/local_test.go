package local

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/localnet"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/manifest"
)

func needRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "the local provider needs root (network namespaces)")
	testenv.RequireTool(t, "ip")
	testenv.RequireTool(t, "curl")
}

func testManifest(t *testing.T, services string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(`{"network": {"dns_server": "10.77.0.2", "gateway": "10.77.0.1", "network_cidr": "10.77.0.0/24"},
  "services": {`+services+`}}`), manifest.FormatJSON, "test.json")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEnsureAndDestroy creates namespaces for two services with a stand-in
// agent (a shell script: the real agent is exercised end to end in
// test/e2e), checks that a namespace reaches the gateway over the bridge,
// that Ensure again changes nothing, that a changed IP is applied, that a
// service gone from the manifest is removed, and that Destroy leaves
// nothing behind.
func TestEnsureAndDestroy(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "fake-agent")
	if err := os.WriteFile(agent, []byte(`#!/bin/sh
# Stands for nixmox-agent: "enrolls" (writes its certificate) and runs.
while [ $# -gt 0 ]; do
  case "$1" in --state-dir) : > "$2/agent.pem" ;; esac
  shift
done
sleep 1000 &
wait
`), 0o755); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("nxt%d-", os.Getpid()%100000)
	bridge := fmt.Sprintf("nxtbr%d", os.Getpid()%100000)
	p := &Provider{Dir: filepath.Join(dir, "local"), Bridge: bridge, AgentBinary: agent, ServerPort: 1, NetnsPrefix: prefix,
		DataDir: filepath.Join(dir, "data")}
	ctx := context.Background()
	t.Cleanup(func() { _ = p.Destroy(ctx, nil) })
	enrolled := map[string]int{}
	enroll := func(_ context.Context, svc string) ([]byte, error) {
		enrolled[svc]++
		return []byte(`{"token":"t"}`), nil
	}
	m := testManifest(t, `"a": {"ip": "10.77.0.10", "hostname": "a.lan"}, "b": {"ip": "10.77.0.11", "hostname": "b.lan"}`)
	var log bytes.Buffer
	if err := p.Ensure(ctx, m, []string{"a", "b"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	for svc, want := range map[string]string{"a": "10.77.0.10/24", "b": "10.77.0.11/24"} {
		got, err := localnet.Addrs(ctx, p.Netns(svc), "eth0")
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("%s: eth0 = %v, %v; want %s", svc, got, err, want)
		}
	}
	if enrolled["a"] != 1 || enrolled["b"] != 1 {
		t.Errorf("enrolled = %v", enrolled)
	}

	// From inside a's namespace, the gateway (where the server listens).
	lis, err := net.Listen("tcp", "10.77.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "gateway") })}
	go srv.Serve(lis)
	defer srv.Close()
	out, err := exec.Command("ip", "netns", "exec", p.Netns("a"), "curl", "-fsS", "--max-time", "10", "http://"+lis.Addr().String()+"/").CombinedOutput()
	if err != nil || string(out) != "gateway" {
		t.Fatalf("namespace a cannot reach the gateway: %v %s", err, out)
	}

	inv, _ := p.state().Load()
	pidA := inv.Services["a"].PID
	log.Reset()
	if err := p.Ensure(ctx, m, []string{"a", "b"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	if log.Len() != 0 {
		t.Errorf("a second Ensure did something:\n%s", log.String())
	}
	if inv, _ := p.state().Load(); inv.Services["a"].PID != pidA {
		t.Errorf("a running agent was started again")
	}

	// A dead agent is drift: Observe sees it, Ensure repairs it.
	before, err := p.Observe(ctx, m, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.StopAgent("a"); err != nil {
		t.Fatal(err)
	}
	if drift, _ := p.Observe(ctx, m, []string{"a", "b"}); drift == before {
		t.Errorf("Observe did not see the dead agent:\n%s", drift)
	}
	if err := p.Ensure(ctx, m, []string{"a", "b"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	if after, _ := p.Observe(ctx, m, []string{"a", "b"}); after != before {
		t.Errorf("after repair:\n%s\nwant\n%s", after, before)
	}
	if enrolled["a"] != 1 {
		t.Errorf("a restarted agent enrolled again: %v", enrolled)
	}

	// a moves, b leaves the manifest.
	m2 := testManifest(t, `"a": {"ip": "10.77.0.20", "hostname": "a.lan"}`)
	if err := p.Ensure(ctx, m2, []string{"a"}, true, enroll, &log); err != nil {
		t.Fatal(err)
	}
	if got, _ := localnet.Addrs(ctx, p.Netns("a"), "eth0"); len(got) != 1 || got[0] != "10.77.0.20/24" {
		t.Errorf("a after the move: %v", got)
	}
	if localnet.NetnsExists(p.Netns("b")) {
		t.Error("b's namespace survived its removal from the manifest")
	}

	if err := p.Destroy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if localnet.NetnsExists(p.Netns("a")) || localnet.LinkExists(ctx, "", bridge) {
		t.Error("Destroy left a namespace or the bridge")
	}
	if agentRunning(pidA, "a", "") {
		t.Error("Destroy left the agent running")
	}
	for _, d := range []string{p.Dir, p.DataDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("Destroy left %s", d)
		}
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left: %s", out)
	}
}
