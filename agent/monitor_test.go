package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/agent"
	"github.com/nixmox/nixmox/pkg/health"
)

// TestMonitorReportsTransitions feeds a scripted sequence of check results
// through Monitor: only transitions are reported, unhealthy only after
// retries+1 failures in a row.
func TestMonitorReportsTransitions(t *testing.T) {
	results := "ok ok fail fail ok fail fail fail fail ok ok"
	seq := strings.Fields(results)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i := 0
	p := health.Prober{Run: func(context.Context, string, time.Duration) (string, error) {
		r := seq[i]
		i++
		if i == len(seq) {
			defer cancel() // the last check; the monitor stops after it
		}
		if r == "fail" {
			return "", errors.New("exited 7")
		}
		return "", nil
	}}
	var ticks []time.Duration
	tick := func(d time.Duration) <-chan time.Time {
		ticks = append(ticks, d)
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	var got, samples []string
	agent.Monitor(ctx, health.Spec{Liveness: "check", Interval: 15 * time.Second, Timeout: time.Second, Retries: 2}, p, tick,
		func(tr agent.Transition) { got = append(got, fmt.Sprint(tr.Healthy)) },
		func(ok bool, _ time.Duration) { samples = append(samples, fmt.Sprint(ok)) })
	// Every result is a sample (the last one comes as the monitor stops).
	want := strings.Fields(strings.NewReplacer("ok", "true", "fail", "false").Replace(results))
	if strings.Join(samples, " ") != strings.Join(want[:len(want)-1], " ") {
		t.Errorf("samples %v for checks %s", samples, results)
	}
	// ok → healthy; two failures are within retries; four in a row →
	// unhealthy at the third; ok → healthy.
	if strings.Join(got, " ") != "true false true" {
		t.Errorf("transitions %v for %s", got, results)
	}
	if len(ticks) == 0 || ticks[0] != 15*time.Second {
		t.Errorf("ticks %v", ticks)
	}
}
