// Package e2e runs nixmox's programs as real processes talking real gRPC on
// loopback.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nixmox/nixmox/internal/fixtures"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

var bin string

func TestMain(m *testing.M) {
	if spec := os.Getenv("NIXMOX_E2E_SANDBOX"); spec != "" {
		os.Exit(sandboxMain(spec)) // the test binary as a unit's process
	}
	dir, err := os.MkdirTemp("", "nixmox-e2e-bin-")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, p := range []string{"nixmox-server", "nixmox-agent", "nixmox-cli"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, p), "./cmd/"+p)
		cmd.Dir = fixtures.Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make bin builds them
		if out, err := cmd.CombinedOutput(); err != nil {
			panic(string(out))
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running program whose log lines the test can wait for.
type proc struct {
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced on every new line
	done  chan struct{}
}

func run(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	if name == "nixmox-server" && len(args) > 0 && args[0] == "serve" && !slices.Contains(args, "--http-listen") {
		// Servers run side by side: each its own status page port.
		args = append(args, "--http-listen", "127.0.0.1:0")
	}
	if name == "nixmox-server" && len(args) > 0 && args[0] == "serve" {
		// Tests ask no binary cache beyond loopback: everything is built.
		args = append(args, "--no-substituters")
	}
	path := filepath.Join(bin, name)
	if !strings.HasPrefix(name, "nixmox-") {
		path = name // another program, from PATH
	}
	p := &proc{name: name, cmd: exec.Command(path, args...), more: make(chan struct{}), done: make(chan struct{})}
	// stdout and stderr both: logs go to stderr, nixmox-cli's lines to stdout.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the child holds its own copy
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, r)
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// mark is where the log is now: await(t, p.mark(), re) waits for a line
// logged from here on.
func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// await returns the first log line from index `from` on that matches re,
// and the index after it; it fails the test if the program exits or 60 s
// pass first.
func (p *proc) await(t testing.TB, from int, re string) (string, int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(60 * time.Second)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if line := p.lines[i]; rx.MatchString(line) {
				p.mu.Unlock()
				return line, i + 1
			}
		}
		from = len(p.lines)
		more := p.more
		p.mu.Unlock()
		select {
		case <-more:
		case <-p.done:
			t.Fatalf("%s exited before logging %q:\n%s", p.name, re, p.log())
		case <-deadline:
			t.Fatalf("%s did not log %q:\n%s", p.name, re, p.log())
		}
	}
}

// startAgent issues svc a one-time token over the control socket, runs
// its agent against addr with its state under dir, and waits from log line
// `from` on until srv sees it connected; it returns the line after that.
func startAgent(t testing.TB, srv *proc, dir, socket, addr, svc string, from int) int {
	t.Helper()
	enroll := filepath.Join(dir, "enroll-"+svc+".json")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "token", svc, "--socket", socket, "-o", enroll).CombinedOutput(); err != nil {
		t.Fatalf("token: %v\n%s", err, out)
	}
	run(t, "nixmox-agent", "--server", addr, "--service", svc, "--enroll-file", enroll,
		"--state-dir", filepath.Join(dir, "agent-"+svc), "--profile", filepath.Join(dir, "profiles-"+svc, "system"))
	_, next := srv.await(t, from, `agent connected: service=`+regexp.QuoteMeta(svc)+`\b`)
	return next
}

func status(t *testing.T, socket string) map[string]*nixmoxv1.ServiceStatus {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := nixmoxv1.NewControlServiceClient(conn).Status(ctx, &nixmoxv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*nixmoxv1.ServiceStatus{}
	for _, s := range resp.GetServices() {
		out[s.GetName()] = s
	}
	return out
}

// TestAgentEnrollsConnectsAndResynchronises runs nixmox-server and a
// nixmox-agent as processes: the agent enrolls with a token issued over the
// control socket, connects over mTLS, shows as connected; killed, it shows
// as disconnected; restarted without its token file, it reconnects with
// the certificate it kept.
func TestAgentEnrollsConnectsAndResynchronises(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	srv := run(t, "nixmox-server", "serve", "--state-dir", filepath.Join(dir, "server"),
		"--listen", "127.0.0.1:0", "--socket", socket)
	line, _ := srv.await(t, 0, `serving: agents=127\.0\.0\.1:\d+`)
	addr := regexp.MustCompile(`agents=(127\.0\.0\.1:\d+)`).FindStringSubmatch(line)[1]

	if st, err := os.Stat(socket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v, %v", st, err)
	}
	enroll := filepath.Join(dir, "enroll.json")
	if out, err := exec.Command(filepath.Join(bin, "nixmox-server"), "token", "dns", "--socket", socket, "-o", enroll).CombinedOutput(); err != nil {
		t.Fatalf("token: %v\n%s", err, out)
	}
	agentArgs := []string{"--server", addr, "--service", "dns", "--enroll-file", enroll,
		"--state-dir", filepath.Join(dir, "agent"), "--profile", filepath.Join(dir, "profiles", "system")}
	agent := run(t, "nixmox-agent", agentArgs...)
	agent.await(t, 0, `enrolled`)
	_, next := srv.await(t, 0, `agent connected: service=dns`)
	if st := status(t, socket)["dns"]; st == nil || !st.GetAgentConnected() {
		t.Fatalf("status after connecting: %v", st)
	}
	// And as the user sees it.
	out, err := exec.Command(filepath.Join(bin, "nixmox-cli"), "status", "--output", "json", "--socket", socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Services []struct {
			Name           string `json:"name"`
			Health         string `json:"health"`
			AgentConnected bool   `json:"agent_connected"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.Services) != 1 || got.Services[0].Name != "dns" ||
		!got.Services[0].AgentConnected || got.Services[0].Health != "unknown" {
		t.Fatalf("nixmox-cli status: %s (%v)", out, err)
	}

	agent.kill()
	_, next = srv.await(t, next, `agent disconnected: service=dns`)
	if st := status(t, socket)["dns"]; st == nil || st.GetAgentConnected() {
		t.Fatalf("status after the agent died: %v", st)
	}

	// The token was used up; the agent comes back on its certificate.
	os.Remove(enroll)
	run(t, "nixmox-agent", agentArgs...)
	srv.await(t, next, `agent connected: service=dns`)
	if st := status(t, socket)["dns"]; st == nil || !st.GetAgentConnected() {
		t.Fatalf("status after the restart: %v", st)
	}
}
