package steps

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/pkg/plan"
)

// TestExecRunsTheCommandAndChecksFromTheServer: an exec service's nix step
// runs its argv (no shell) in the manifest's directory with its facts in
// the environment; a failure names the field and carries the output's
// tail; its verify step runs the health checks on the server.
func TestExecRunsTheCommandAndChecksFromTheServer(t *testing.T) {
	dir := t.TempDir()
	m := testManifest(t, `"b": {"ip": "10.9.0.11", "hostname": "b.lab.test",
	  "exec": ["sh", "-c", "echo \"$NIXMOX_SERVICE $NIXMOX_IP $NIXMOX_HOSTNAME $NIXMOX_FILES\" > deployed"],
	  "interface": {"health": {"liveness": "grep -q b.lab.test deployed", "interval": 1, "timeout": 10}}},
	  "c": {"ip": "10.9.0.12", "hostname": "c.lab.test", "exec": ["sh", "-c", "echo it broke >&2; exit 3"]}`)
	j := &Job{M: m, Dir: dir, Files: "/srv/generated"}
	var r Exec
	// Verify before the deploy: the check fails.
	if err := r.Run(testCtx(t), j, step(plan.Verify, "b")); err == nil {
		t.Error("verify passed before the command ran")
	}
	if err := r.Run(testCtx(t), j, step(plan.NixServiceConfig, "b")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "deployed"))
	if err != nil || strings.TrimSpace(string(got)) != "b 10.9.0.11 b.lab.test /srv/generated" {
		t.Errorf("the command wrote %q, %v", got, err)
	}
	if err := r.Run(testCtx(t), j, step(plan.Verify, "b")); err != nil {
		t.Errorf("verify after the command: %v", err)
	}
	err = r.Run(testCtx(t), j, step(plan.NixServiceConfig, "c"))
	if err == nil || err.Error() != `services.c.exec "sh": exit status 3: it broke` {
		t.Errorf("a failing command: %v", err)
	}
}

// TestSetDispatchesByPhase: each kind of step goes to its runner; an exec
// service's nix and verify steps go to Exec.
func TestSetDispatchesByPhase(t *testing.T) {
	m := testManifest(t, webService+`, "b": {"ip": "10.9.0.11", "hostname": "b.lab.test", "exec": ["true"]}`)
	set := &Set{Containers: &Containers{}, Terraform: &Terraform{}, Deploy: &Deploy{}, Verify: &Verify{}, Exec: &Exec{}}
	j := &Job{M: m}
	for _, tc := range []struct {
		s    plan.Step
		want Runner
	}{
		{step(plan.TFInfra, ""), set.Containers},
		{step(plan.TFAuthCore, ""), set.Terraform},
		{step(plan.TFServiceInfra, "web"), set.Terraform},
		{step(plan.TFServiceConfig, "web"), set.Terraform},
		{step(plan.NixServiceConfig, "web"), set.Deploy},
		{step(plan.NixCore, "web"), set.Deploy},
		{step(plan.Verify, "web"), set.Verify},
		{step(plan.NixServiceConfig, "b"), set.Exec},
		{step(plan.Verify, "b"), set.Exec},
	} {
		if got, err := set.For(j, tc.s); err != nil || got != tc.want {
			t.Errorf("%s: %T, %v; want %T", tc.s.ID, got, err, tc.want)
		}
	}
	if _, err := set.For(j, plan.Step{ID: "x", Phase: "nope"}); err == nil {
		t.Error("an unknown phase has a runner")
	}
}
