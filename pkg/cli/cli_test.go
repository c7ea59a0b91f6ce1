package cli_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixmox/nixmox/agent"
	"github.com/nixmox/nixmox/server"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"nixmox-cli":    func() { os.Exit(cli.Main(os.Args[1:], cli.System())) },
		"nixmox-server": func() { os.Exit(server.Main(os.Args[1:], os.Stdout, os.Stderr)) },
		"nixmox-agent":  func() { os.Exit(agent.Main(os.Args[1:], os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txtar: each a command line, the files
// it reads, and what must appear on stdout and stderr.
//
// [have:PROGRAM] is a condition: PROGRAM is on PATH (a missing one fails
// the script under CI=true).
//
// Besides testscript's own commands, `exits N cmd args...` runs cmd and
// fails unless it exits with status N; its output is then checked with
// stdout/stderr as usual. $EXAMPLES is the repository's examples/ and
// $SHARED the shared fixtures.
//
// `server` starts nixmox-server (state in $WORK/state, agents on a loopback
// port, NIXMOX_SOCKET set for nixmox-cli) and waits until it serves;
// `agent SERVICE` enrolls and starts that service's nixmox-agent (state in
// $WORK/agent-SERVICE) and waits until the server sees it connected. Both
// are killed when the script ends.
func TestScripts(t *testing.T) {
	root := fixtures.Root()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		// [have:PROGRAM] is true when PROGRAM is on PATH; under CI=true a
		// missing one fails the script instead (testenv's rule), so a
		// `[!have:nix-build] skip` can never hide a missing install step.
		Condition: func(cond string) (bool, error) {
			program, ok := strings.CutPrefix(cond, "have:")
			if !ok {
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			if _, err := exec.LookPath(program); err != nil {
				if testenv.InCI() {
					return false, fmt.Errorf("CI=true, and this script needs %s on PATH: make test must provide it", program)
				}
				return false, nil
			}
			return true, nil
		},
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", filepath.Join(root, "examples"))
			env.Setenv("SHARED", filepath.Join(root, "..", "shared", "manifests"))
			env.Setenv("HOME", filepath.Join(env.WorkDir, "home"))
			env.Setenv("NIXMOX_LOG_LEVEL", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"server": startServer,
			"agent":  startAgent,
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exits STATUS command [args...]")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exits: bad status %q", args[0])
				}
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						ts.Fatalf("exits: %v", err)
					}
					got = ee.ExitCode()
				}
				if got != want {
					ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
				}
			},
		},
	})
}

// servers holds each script's running server: its agent address and its
// log lines.
var servers sync.Map // *testscript.TestScript -> *runningServer

type runningServer struct {
	addr  string
	lines <-chan string
}

// background starts a program of the script's in its work directory with
// the script's PATH, kills it when the script ends, and returns its stderr
// lines.
func background(ts *testscript.TestScript, name string, args ...string) <-chan string {
	path, err := exec.LookPath(name)
	if err != nil {
		ts.Fatalf("%s: %v", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.Env = append(os.Environ(), "PATH="+ts.Getenv("PATH"), "HOME="+ts.Getenv("HOME"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		ts.Fatalf("%v", err)
	}
	if err := cmd.Start(); err != nil {
		ts.Fatalf("%s: %v", name, err)
	}
	ts.Defer(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody waits for it
			}
		}
		close(lines)
	}()
	return lines
}

// await reads lines until one matches re; it fails the script if the
// program exits or 60 s pass first.
func await(ts *testscript.TestScript, lines <-chan string, re string) string {
	rx := regexp.MustCompile(re)
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				ts.Fatalf("the program exited before logging %q", re)
			}
			if rx.MatchString(line) {
				return line
			}
		case <-deadline:
			ts.Fatalf("nothing matched %q within 60 s", re)
		}
	}
}

func startServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: server")
	}
	work := ts.Getenv("WORK")
	socket := filepath.Join(work, "control.sock")
	lines := background(ts, "nixmox-server", "serve", "--state-dir", filepath.Join(work, "state"),
		"--listen", "127.0.0.1:0", "--socket", socket, "--http-listen", "127.0.0.1:0", "--no-substituters")
	line := await(ts, lines, `serving: agents=`)
	addr := regexp.MustCompile(`agents=(\S+)`).FindStringSubmatch(line)[1]
	servers.Store(ts, &runningServer{addr: addr, lines: lines})
	ts.Setenv("NIXMOX_SOCKET", socket)
}

func startAgent(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: agent SERVICE")
	}
	v, ok := servers.Load(ts)
	if !ok {
		ts.Fatalf("agent: start the server first")
	}
	srv := v.(*runningServer)
	svc, work := args[0], ts.Getenv("WORK")
	enroll := filepath.Join(work, "enroll-"+svc+".json")
	if err := ts.Exec("nixmox-server", "token", svc, "--socket", filepath.Join(work, "control.sock"), "-o", enroll); err != nil {
		ts.Fatalf("token: %v", err)
	}
	background(ts, "nixmox-agent", "--server", srv.addr, "--service", svc, "--enroll-file", enroll,
		"--state-dir", filepath.Join(work, "agent-"+svc), "--profile", filepath.Join(work, "profiles-"+svc, "system"))
	await(ts, srv.lines, `agent connected: service=`+regexp.QuoteMeta(svc)+`\b`)
}
