package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/server/steps"
	"github.com/nixmox/nixmox/server/store"
)

// Rollback sets a service back to an earlier generation's closure: to, or
// the last healthy generation before the newest healthy one. It is deployed
// as a new generation and verified like any other; it takes the rollout
// turn, so it never runs beside a rollout.
func (c *Controller) Rollback(ctx context.Context, service string, to int64, who string, emit func(*nixmoxv1.RolloutEvent)) error {
	release, err := c.acquire(ctx, false, emit)
	if err != nil {
		return err
	}
	defer release()
	c.setRunning("rollback:" + service)
	sm, err := c.Store.Manifest(0)
	if err != nil {
		return fmt.Errorf("no manifest has been applied: %w", err)
	}
	m, err := manifest.Parse(sm.JSON, manifest.FormatJSON, sm.File)
	if err != nil {
		return err
	}
	svc := m.Service(service)
	if svc == nil {
		return fmt.Errorf("%q is not an enabled service of the applied manifest", service)
	}
	gens, err := c.Store.Generations(service)
	if err != nil {
		return err
	}
	var target *store.Generation
	newestHealthy := -1
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		switch {
		case to > 0 && g.Number == to:
			target = &gens[i]
		case to == 0 && g.Healthy && newestHealthy == -1:
			newestHealthy = i
		case to == 0 && g.Healthy && target == nil:
			target = &gens[i]
		}
	}
	if target == nil {
		if to > 0 {
			return fmt.Errorf("%s has no generation %d", service, to)
		}
		return fmt.Errorf("%s has no healthy generation before its current one", service)
	}
	step := "rollback:" + service
	say := func(st nixmoxv1.StepState, msg string) {
		e := &nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Step: step, State: st, Message: msg}
		emit(e)
		c.broadcast(e)
	}
	say(nixmoxv1.StepState_STEP_STATE_RUNNING, fmt.Sprintf("back to the closure of generation %d", target.Number))
	j := &steps.Job{M: m, Files: filepath.Join(c.WorkDir, "generated")}
	err = c.Steps.Deploy.Again(ctx, j, svc, target.StorePath)
	if err == nil {
		err = c.Steps.Verify.Service(ctx, m, svc)
	}
	result := "ok"
	if err != nil {
		result = err.Error()
		say(nixmoxv1.StepState_STEP_STATE_FAILED, err.Error())
	} else {
		say(nixmoxv1.StepState_STEP_STATE_SUCCEEDED, "")
	}
	_, _ = c.Store.Audit(store.AuditEntry{Time: time.Now(), Who: who, What: fmt.Sprintf("rollback %s to generation %d", service, target.Number), Result: result})
	c.recorded()
	return err
}
