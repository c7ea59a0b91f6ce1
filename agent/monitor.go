package agent

import (
	"context"
	"time"

	"github.com/nixmox/nixmox/pkg/health"
)

// Transition is a change of a service's health seen by Monitor.
type Transition struct {
	Healthy bool
	Output  string
	Latency time.Duration
}

// Monitor runs the liveness check every interval until ctx ends, and calls
// report on every transition: unhealthy after Retries+1 failures in a row,
// healthy again at the first success. The first result is always reported.
// tick is the clock (nil means time.After); now measures latency. sample,
// if not nil, is told every result.
func Monitor(ctx context.Context, s health.Spec, p health.Prober, tick func(time.Duration) <-chan time.Time, report func(Transition), sample func(ok bool, latency time.Duration)) {
	if s.Liveness == "" {
		return
	}
	if tick == nil {
		tick = time.After
	}
	run := p.Run
	if run == nil {
		run = health.Shell
	}
	known, healthy, failures := false, false, 0
	for {
		start := time.Now()
		out, err := run(ctx, s.Liveness, s.Timeout)
		latency := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		if sample != nil {
			sample(err == nil, latency)
		}
		switch {
		case err == nil:
			failures = 0
			if !known || !healthy {
				known, healthy = true, true
				report(Transition{Healthy: true, Output: out, Latency: latency})
			}
		default:
			failures++
			if (!known || healthy) && failures > s.Retries {
				known, healthy = true, false
				report(Transition{Healthy: false, Output: out + err.Error(), Latency: latency})
			}
		}
		select {
		case <-tick(s.Interval):
		case <-ctx.Done():
			return
		}
	}
}
