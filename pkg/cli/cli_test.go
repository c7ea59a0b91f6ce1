package cli_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/pkg/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"nixmox-cli": func() { os.Exit(cli.Main(os.Args[1:], cli.System())) },
	})
}

// TestScripts runs testdata/script/*.txtar: each a command line, the files
// it reads, and what must appear on stdout and stderr.
//
// Besides testscript's own commands, `exits N cmd args...` runs cmd and
// fails unless it exits with status N; its output is then checked with
// stdout/stderr as usual. $EXAMPLES is the repository's examples/ and
// $SHARED the shared fixtures.
func TestScripts(t *testing.T) {
	root := fixtures.Root()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", filepath.Join(root, "examples"))
			env.Setenv("SHARED", filepath.Join(root, "..", "shared", "manifests"))
			env.Setenv("HOME", filepath.Join(env.WorkDir, "home"))
			env.Setenv("NIXMOX_LOG_LEVEL", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
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
