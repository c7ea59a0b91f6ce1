package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/store"
)

// Verify runs a service's verify step: it waits for the service's agent
// to report the generation its nix step handed out healthy, confirms it,
// and waits for the confirmation to be acknowledged. An agent that fails
// the generation has already rolled it back; its report is the cause.
// When no generation was handed out in this server's life (the nix step
// was unchanged, or ran before the server restarted) it finds out where
// the latest one stands and acts on that.
type Verify struct {
	Store  *store.Store
	Agents Agents
	// Build and Deliver: the closure fingerprinted, and a generation asked
	// for again when the agent no longer has it.
	Build   *Build
	Deliver *Deliver
	Log     hclog.Logger
	// Grace is how long the step waits for an agent that disconnected
	// before it fails, saying so (0 = DefaultGrace); Tick is how often it
	// looks (0 = a second).
	Grace, Tick time.Duration
}

// DefaultGrace is how long a verify step waits for a disconnected agent to
// come back: enough for a restart, not the whole health_check_timeout.
const DefaultGrace = 20 * time.Second

// Fingerprint implements Runner: the same inputs as the service's nix
// step.
func (v *Verify) Fingerprint(ctx context.Context, j *Job, s plan.Step) (string, error) {
	return fingerprintService(ctx, v.Build, j, s)
}

// Run implements Runner.
func (v *Verify) Run(ctx context.Context, j *Job, s plan.Step) error {
	return v.Service(ctx, j.M, j.M.Service(s.Service))
}

// Service verifies the service's latest generation (see Verify).
func (v *Verify) Service(ctx context.Context, m *manifest.Manifest, svc *manifest.Service) error {
	p := v.Agents.Take(svc.Name)
	if p == nil {
		var err error
		if p, err = v.reattach(ctx, m, svc); p == nil || err != nil {
			return err
		}
	}
	defer p.Cancel()
	wait, cancel := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancel()
	grace, tick := v.Grace, v.Tick
	if grace <= 0 {
		grace = DefaultGrace
	}
	if tick <= 0 {
		tick = time.Second
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var failure string
	attaches := v.Agents.Attaches(svc.Name)
	for {
		select {
		case <-ticker.C:
			if since, gone := v.Agents.DisconnectedSince(svc.Name); gone && time.Since(since) >= grace {
				return fmt.Errorf("the agent of %s has been disconnected since %s (%s): it cannot report generation %d",
					svc.Name, since.Format(time.TimeOnly), time.Since(since).Round(time.Second), p.Generation)
			}
			if n := v.Agents.Attaches(svc.Name); n != attaches {
				attaches = n
				// Reconnected: an agent that died before it wrote the
				// generation down has lost it (it is neither applying it nor
				// done with it): ask again, once.
				state, _ := v.Agents.State(svc.Name)
				if state != nil && state.GetApplying() != p.Generation && state.GetActiveGeneration() < p.Generation &&
					state.GetFailedGeneration() != p.Generation && !p.Asked {
					if err := v.askAgain(ctx, svc, p.Generation); err != nil {
						return err
					}
					p.Asked = true
				}
			}
		case r := <-p.Reports:
			if r.GetGeneration() != p.Generation {
				continue
			}
			switch st := r.GetStage(); {
			case st == nixmoxv1.Stage_STAGE_PULLED || st == nixmoxv1.Stage_STAGE_SWITCHED:
				p.Asked = false // the attempt asked for has started
			case p.Asked && (st == nixmoxv1.Stage_STAGE_FAILED || st == nixmoxv1.Stage_STAGE_ROLLED_BACK):
				continue // the end of the earlier attempt, told again on reconnect
			}
			switch r.GetStage() {
			case nixmoxv1.Stage_STAGE_HEALTHY:
				if err := v.Agents.Send(ctx, svc.Name, confirm(p.Generation)); err != nil {
					return err
				}
			case nixmoxv1.Stage_STAGE_CONFIRMED:
				return v.markHealthy(svc.Name, p.Generation)
			case nixmoxv1.Stage_STAGE_FAILED:
				failure = r.GetLog()
				if p.NoRollback {
					return fmt.Errorf("%s: %s", svc.Name, failure)
				}
			case nixmoxv1.Stage_STAGE_ROLLED_BACK:
				if r.GetUnconfirmed() {
					if !p.Resumed && !r.GetInterrupted() {
						// This server was up, waiting to confirm it: the agent
						// could not reach it — the generation cut it off.
						return fmt.Errorf("generation %d of %s was rolled back by its agent, which could not reach the server to have it confirmed (does the generation cut the agent off?): %s",
							p.Generation, svc.Name, orNoCause(r.GetLog()))
					}
					// Healthy, and reverted only because the server that
					// handed it out went away, or the agent itself stopped
					// in the middle: ask again, once.
					if err := v.askAgain(ctx, svc, p.Generation); err != nil {
						return err
					}
					p.Resumed, p.Asked, failure = false, true, ""
					continue
				}
				if failure == "" {
					failure = r.GetLog() // its failure report was lost on the way
				}
				if failure == "" {
					failure = "the agent gave no cause"
				}
				return fmt.Errorf("the agent rolled %s back: %s", svc.Name, failure)
			}
		case <-wait.Done():
			if failure != "" {
				return fmt.Errorf("%s: %s", svc.Name, failure)
			}
			return fmt.Errorf("%s did not report generation %d healthy within %ds", svc.Name, p.Generation, m.HealthCheckTimeout)
		}
	}
}

func confirm(gen int64) *nixmoxv1.ConnectResponse {
	return &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Confirm{Confirm: &nixmoxv1.Confirm{Generation: gen}}}
}

// reattach finds where the service's latest generation stands. It returns
// nil when there is nothing to wait for, and otherwise a subscription to
// wait on, having confirmed the generation or asked the agent for it again
// as needed.
func (v *Verify) reattach(ctx context.Context, m *manifest.Manifest, svc *manifest.Service) (*agents.Pending, error) {
	gens, err := v.Store.Generations(svc.Name)
	if err != nil || len(gens) == 0 {
		return nil, err // nothing was ever deployed by this server: nothing to verify
	}
	last := gens[len(gens)-1]
	if last.Healthy {
		return nil, nil
	}
	wait, cancelWait := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancelWait()
	if err := v.Agents.WaitConnected(wait, svc.Name); err != nil {
		return nil, fmt.Errorf("the agent of %s did not reconnect within %ds", svc.Name, m.HealthCheckTimeout)
	}
	reports, cancel := v.Agents.Subscribe(svc.Name)
	p := &agents.Pending{Generation: last.Number, Reports: reports, Cancel: cancel}
	state, _ := v.Agents.State(svc.Name)
	switch {
	case state.GetActiveGeneration() == last.Number:
		cancel()
		return nil, v.markHealthy(svc.Name, last.Number)
	case state.GetApplying() == last.Number && state.GetApplyingHealthy():
		err = v.Agents.Send(ctx, svc.Name, confirm(last.Number))
	case state.GetFailedGeneration() == last.Number && state.GetApplying() != last.Number && !state.GetFailureUnconfirmed():
		cancel()
		return nil, fmt.Errorf("the agent of %s found generation %d unhealthy and rolled it back: %s — it is tried again when the manifest or its closure changes, or with apply --force",
			svc.Name, last.Number, orNoCause(state.GetFailure()))
	case state.GetApplying() == last.Number:
		// Still checking it (or rolling it back): its reports will come.
		p.Resumed = true
		if v.Log != nil {
			v.Log.Info("waiting for the agent to finish checking", "service", svc.Name, "generation", last.Number)
		}
	default:
		// The agent reverted it for want of a confirmation (this server was
		// away), or never got it: ask again.
		p.Asked = true
		err = v.Agents.Send(ctx, svc.Name, v.Deliver.desired(svc, last.Number, last.StorePath, false))
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

// askAgain hands the agent generation gen again (its recorded store path).
func (v *Verify) askAgain(ctx context.Context, svc *manifest.Service, gen int64) error {
	gens, err := v.Store.Generations(svc.Name)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g.Number == gen {
			if v.Log != nil {
				v.Log.Info("the agent reverted a generation this server had not confirmed; asking again", "service", svc.Name, "generation", gen)
			}
			return v.Agents.Send(ctx, svc.Name, v.Deliver.desired(svc, gen, g.StorePath, false))
		}
	}
	return fmt.Errorf("generation %d of %s is not recorded", gen, svc.Name)
}

func orNoCause(s string) string {
	if s == "" {
		return "the agent gave no cause"
	}
	return s
}

func (v *Verify) markHealthy(service string, gen int64) error {
	gens, err := v.Store.Generations(service)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g.Number == gen {
			g.Healthy = true
			return v.Store.PutGeneration(service, g)
		}
	}
	return nil
}
