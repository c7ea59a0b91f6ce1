package local

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/nixmox/nixmox/server/provider"
)

// Supervision of the agents, as systemd's Restart=on-failure would do on a
// container: an agent that died is started again, after 1 s, then 2, 4 ...
// up to 30 s while it keeps dying; a run of a minute resets the delay.
const (
	restartFirst  = time.Second
	restartMax    = 30 * time.Second
	restartSteady = time.Minute
)

// Supervise watches the agents the inventory names, every interval, and
// starts again each one that died, with backoff; what it does goes to log.
// It returns when ctx ends. enroll is used only if an agent lost its
// certificate.
func (p *Provider) Supervise(ctx context.Context, interval time.Duration, enroll provider.Enroller, log io.Writer) {
	type backoff struct {
		delay   time.Duration
		next    time.Time // not before
		started time.Time
	}
	state := map[string]*backoff{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			p.mu.Lock()
			inv, err := p.state().Load()
			if err != nil || inv.Gateway == "" {
				p.mu.Unlock()
				continue
			}
			gw, err := netip.ParsePrefix(inv.Gateway)
			if err != nil {
				p.mu.Unlock()
				continue
			}
			for _, name := range slices.Sorted(maps.Keys(inv.Services)) {
				e := inv.Services[name]
				b := state[name]
				if b == nil {
					b = &backoff{delay: restartFirst, started: now}
					state[name] = b
				}
				if agentRunning(e.PID, name, p.serverAddr(gw.Addr())) {
					if now.Sub(b.started) >= restartSteady {
						b.delay = restartFirst // it ran long enough: a fresh start next time
					}
					continue
				}
				if now.Before(b.next) {
					continue
				}
				if err := p.startAgent(ctx, inv, e, name, gw.Addr(), enroll, log); err != nil {
					fmt.Fprintf(log, "restarting the agent of %s: %v\n", name, err)
				} else {
					fmt.Fprintf(log, "the agent of %s had died: restarted it (next restart not before %s)\n", name, b.delay)
				}
				b.started, b.next = now, now.Add(b.delay)
				b.delay = min(b.delay*2, restartMax)
			}
			p.mu.Unlock()
		}
	}
}
