package steps

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/plan"
)

// Exec runs the steps of an exec service — a host without an agent: its
// nix step runs the service's command on the server's host, and its verify
// step runs its health checks from the server.
type Exec struct{}

// Fingerprint implements Runner: the service's slice of the manifest (its
// command is in it).
func (Exec) Fingerprint(_ context.Context, j *Job, s plan.Step) (string, error) {
	h := newHash(s)
	if err := hashManifest(h, j, s); err != nil {
		return "", err
	}
	return sum(h), nil
}

// Run implements Runner.
func (Exec) Run(ctx context.Context, j *Job, s plan.Step) error {
	svc := j.M.Service(s.Service)
	if s.Phase == plan.Verify {
		return health.Prober{Dir: j.Dir}.Verify(ctx, HealthSpec(svc))
	}
	// argv as given (no shell), in the manifest's directory, its output to
	// the step's log, bounded by health_check_timeout.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(j.M.HealthCheckTimeout)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, svc.Exec[0], svc.Exec[1:]...)
	cmd.Dir = j.Dir
	cmd.Env = append(os.Environ(), "NIXMOX_SERVICE="+svc.Name, "NIXMOX_IP="+svc.IP,
		"NIXMOX_HOSTNAME="+svc.Hostname, "NIXMOX_FILES="+j.Files)
	cmd.WaitDelay = time.Second
	var tail tailBuffer
	log, done := j.StepLog("exec:" + svc.Name)
	defer done()
	cmd.Stdout = io.MultiWriter(log, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %ds", j.M.HealthCheckTimeout)
		}
		return fmt.Errorf("%s.exec %q: %w: %s", svc.Path(), svc.Exec[0], err, strings.TrimSpace(tail.String()))
	}
	return nil
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
