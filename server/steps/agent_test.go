package steps

import (
	"net"
	"strings"
	"testing"
	"time"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/store"
)

// These tests play the agent through the real agents hub: they attach a
// stream for the service, read what the runners send down it, and report
// stages as an agent would.

const webService = `"web": {"ip": "10.9.0.10", "hostname": "web.lab.test", "closure": "web.nix",
  "interface": {"health": {"liveness": "true", "interval": 1, "timeout": 5}}}`

type agentSide struct {
	t      *testing.T
	hub    *agents.Hub
	stream *agents.Stream
}

func attach(t *testing.T, hub *agents.Hub, hello *nixmoxv1.Hello) *agentSide {
	return &agentSide{t: t, hub: hub, stream: hub.Attach("web", hello, &net.TCPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 7443})}
}

// next is the next message the server sent the agent.
func (a *agentSide) next() *nixmoxv1.ConnectResponse {
	a.t.Helper()
	select {
	case m := <-a.stream.Outgoing():
		return m
	case <-time.After(10 * time.Second):
		a.t.Fatal("the server sent the agent nothing")
		return nil
	}
}

func (a *agentSide) report(gen int64, st nixmoxv1.Stage, log string) {
	a.hub.Report("web", &nixmoxv1.StageReport{Generation: gen, Stage: st, Log: log})
}

// TestDeliverRecordsAndHandsOut: a delivered generation is recorded as the
// service's next, and its agent gets the service's secrets before the
// desired generation, which names the cache at the address the agent
// reached the server by and the health checks; the verify step will find
// it expected.
func TestDeliverRecordsAndHandsOut(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService)
	a := attach(t, hub, &nixmoxv1.Hello{})
	d := &Deliver{Store: st, Agents: hub, CacheDir: "/var/lib/nixmox/cache", CachePublicKey: "nixmox:key", CachePort: "7444"}
	for want := int64(1); want <= 2; want++ {
		if err := d.Generation(testCtx(t), m, m.Service("web"), "/nix/store/aaa-web", map[string][]byte{"token": []byte("x")}, true); err != nil {
			t.Fatal(err)
		}
		if s := a.next().GetSecrets(); s == nil || string(s.GetValues()["token"]) != "x" {
			t.Fatalf("first message %v, want the secrets", s)
		}
		des := a.next().GetDesired()
		if des.GetGeneration() != want || des.GetStorePath() != "/nix/store/aaa-web" || des.GetCacheUrl() != "http://10.9.0.1:7444" ||
			des.GetCachePublicKey() != "nixmox:key" || !des.GetNoRollback() || des.GetHealth().GetLiveness() != "true" ||
			des.GetConfirmTimeout().AsDuration() != 30*time.Second {
			t.Errorf("desired %v", des)
		}
		p := hub.Take("web")
		if p == nil || p.Generation != want || !p.NoRollback {
			t.Fatalf("expected %+v, want generation %d", p, want)
		}
		p.Cancel()
	}
	gens, _ := st.Generations("web")
	if len(gens) != 2 || gens[1].Number != 2 || gens[1].StorePath != "/nix/store/aaa-web" || gens[1].Healthy {
		t.Errorf("generations %+v", gens)
	}
}

// TestVerifyConfirmsAHealthyGeneration: healthy → the server confirms →
// the agent acknowledges → the generation is recorded healthy.
func TestVerifyConfirmsAHealthyGeneration(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService)
	a := attach(t, hub, &nixmoxv1.Hello{})
	if err := st.PutGeneration("web", store.Generation{Number: 1, StorePath: "/nix/store/aaa-web"}); err != nil {
		t.Fatal(err)
	}
	hub.Expect("web", 1, false)
	v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}}
	done := make(chan error, 1)
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	a.report(1, nixmoxv1.Stage_STAGE_SWITCHED, "")
	a.report(1, nixmoxv1.Stage_STAGE_HEALTHY, "")
	if c := a.next().GetConfirm(); c.GetGeneration() != 1 {
		t.Fatalf("the server sent %v, want a confirmation of 1", c)
	}
	a.report(1, nixmoxv1.Stage_STAGE_CONFIRMED, "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if gens, _ := st.Generations("web"); !gens[0].Healthy {
		t.Error("the confirmed generation is not recorded healthy")
	}
}

// TestVerifyNamesTheAgentsFailure: a generation the agent found unhealthy
// and rolled back fails the step with the agent's own words; with
// no_rollback the failure itself ends it.
func TestVerifyNamesTheAgentsFailure(t *testing.T) {
	for _, noRollback := range []bool{false, true} {
		st, hub := newStore(t), &agents.Hub{}
		m := testManifest(t, webService)
		a := attach(t, hub, &nixmoxv1.Hello{})
		hub.Expect("web", 2, noRollback)
		v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}}
		done := make(chan error, 1)
		go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
		a.report(1, nixmoxv1.Stage_STAGE_HEALTHY, "") // an older generation's report is not this one's
		a.report(2, nixmoxv1.Stage_STAGE_FAILED, "liveness `curl -f web` exited 22")
		if !noRollback {
			a.report(2, nixmoxv1.Stage_STAGE_ROLLED_BACK, "")
		}
		err := <-done
		want := "the agent rolled web back: liveness `curl -f web` exited 22"
		if noRollback {
			want = "web: liveness `curl -f web` exited 22"
		}
		if err == nil || err.Error() != want {
			t.Errorf("no_rollback=%v: %v, want %q", noRollback, err, want)
		}
	}
}

// TestVerifyReattaches: with nothing handed out in this server's life, the
// verify step acts on where the latest generation stands for the agent:
// already active → recorded healthy, nothing sent; passed its checks and
// waiting → confirmed; not there (reverted, or never received) → handed
// out again; failed → the agent's failure.
func TestVerifyReattaches(t *testing.T) {
	cases := []struct {
		name  string
		hello *nixmoxv1.Hello
		agent func(a *agentSide) // what the agent then does
		err   string
	}{
		{name: "active", hello: &nixmoxv1.Hello{ActiveGeneration: 3}},
		{name: "waiting for confirmation", hello: &nixmoxv1.Hello{ActiveGeneration: 2, Applying: 3, ApplyingHealthy: true},
			agent: func(a *agentSide) {
				if c := a.next().GetConfirm(); c.GetGeneration() != 3 {
					a.t.Errorf("sent %v, want a confirmation of 3", c)
				}
				a.report(3, nixmoxv1.Stage_STAGE_CONFIRMED, "")
			}},
		{name: "reverted", hello: &nixmoxv1.Hello{ActiveGeneration: 2},
			agent: func(a *agentSide) {
				if d := a.next().GetDesired(); d.GetGeneration() != 3 || d.GetStorePath() != "/nix/store/ccc-web" {
					a.t.Errorf("sent %v, want generation 3 again", d)
				}
				a.report(3, nixmoxv1.Stage_STAGE_HEALTHY, "")
				if c := a.next().GetConfirm(); c.GetGeneration() != 3 {
					a.t.Errorf("sent %v, want a confirmation of 3", c)
				}
				a.report(3, nixmoxv1.Stage_STAGE_CONFIRMED, "")
			}},
		{name: "failed", hello: &nixmoxv1.Hello{ActiveGeneration: 2, FailedGeneration: 3, Failure: "readiness timed out"},
			err: "the agent of web found generation 3 unhealthy and rolled it back: readiness timed out — it is tried again when the manifest or its closure changes, or with apply --force"},
		{name: "reverted unconfirmed", hello: &nixmoxv1.Hello{ActiveGeneration: 2, FailedGeneration: 3, Failure: "generation 3 was not confirmed by the server within 30s", FailureUnconfirmed: true},
			agent: func(a *agentSide) {
				if d := a.next().GetDesired(); d.GetGeneration() != 3 {
					a.t.Errorf("sent %v, want generation 3 again", d)
				}
				a.report(3, nixmoxv1.Stage_STAGE_HEALTHY, "")
				if c := a.next().GetConfirm(); c.GetGeneration() != 3 {
					a.t.Errorf("sent %v, want a confirmation of 3", c)
				}
				a.report(3, nixmoxv1.Stage_STAGE_CONFIRMED, "")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, hub := newStore(t), &agents.Hub{}
			m := testManifest(t, webService)
			for n, path := range map[int64]string{2: "/nix/store/bbb-web", 3: "/nix/store/ccc-web"} {
				if err := st.PutGeneration("web", store.Generation{Number: n, StorePath: path, Healthy: n == 2}); err != nil {
					t.Fatal(err)
				}
			}
			a := attach(t, hub, tc.hello)
			v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}}
			done := make(chan error, 1)
			go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
			if tc.agent != nil {
				tc.agent(a)
			}
			err := <-done
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("%v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if gens, _ := st.Generations("web"); !gens[1].Healthy {
				t.Error("generation 3 is not recorded healthy")
			}
			select {
			case extra := <-a.stream.Outgoing():
				t.Errorf("the server also sent %v", extra)
			default:
			}
		})
	}
}

// TestVerifyWithNothingDeployed: a service this server never deployed, or
// whose latest generation is healthy, has nothing to verify.
func TestVerifyWithNothingDeployed(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService)
	v := &Verify{Store: st, Agents: hub}
	if err := v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")); err != nil {
		t.Errorf("never deployed: %v", err)
	}
	if err := st.PutGeneration("web", store.Generation{Number: 1, Healthy: true}); err != nil {
		t.Fatal(err)
	}
	if err := v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")); err != nil {
		t.Errorf("healthy: %v", err)
	}
}

// TestVerifyFailsFastOnADisconnectedAgent: an agent that went away while
// its generation was being verified fails the step after the grace,
// saying it is disconnected and since when — not after the whole health
// timeout, blaming health; one that comes back within the grace is waited
// for.
func TestVerifyFailsFastOnADisconnectedAgent(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService) // health_check_timeout 20 s
	a := attach(t, hub, &nixmoxv1.Hello{})
	hub.Expect("web", 1, false)
	v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}, Grace: 200 * time.Millisecond, Tick: 10 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	a.report(1, nixmoxv1.Stage_STAGE_SWITCHED, "")
	hub.Detach("web", a.stream)
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "the agent of web has been disconnected since ") || !strings.Contains(err.Error(), "cannot report generation 1") {
		t.Errorf("verify on a disconnected agent: %v", err)
	}

	// Back within the grace: the verify goes on and confirms.
	hub.Expect("web", 2, false)
	v.Grace = 10 * time.Second
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	a = attach(t, hub, &nixmoxv1.Hello{})
	hub.Detach("web", a.stream)
	a = attach(t, hub, &nixmoxv1.Hello{})
	a.report(2, nixmoxv1.Stage_STAGE_HEALTHY, "")
	if c := a.next().GetConfirm(); c.GetGeneration() != 2 {
		t.Fatalf("sent %v, want a confirmation of 2", c)
	}
	a.report(2, nixmoxv1.Stage_STAGE_CONFIRMED, "")
	if err := <-done; err != nil {
		t.Errorf("an agent back within the grace: %v", err)
	}
}

// TestVerifyAsksAgainForAnUnconfirmedRevert: a generation the agent rolled
// back only because the server did not confirm it in time is handed out
// again and verified; a rollback whose failure report was lost still names
// its cause.
func TestVerifyAsksAgainForAnUnconfirmedRevert(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService)
	if err := st.PutGeneration("web", store.Generation{Number: 4, StorePath: "/nix/store/ddd-web"}); err != nil {
		t.Fatal(err)
	}
	// A server restarted while the agent still held generation 4 (it
	// handed it out before it died): the resumed verify waits for it.
	a := attach(t, hub, &nixmoxv1.Hello{ActiveGeneration: 3, Applying: 4})
	v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}}
	done := make(chan error, 1)
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	waitSubscribed(t, hub, "web")
	hub.Report("web", &nixmoxv1.StageReport{Generation: 4, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Unconfirmed: true,
		Log: "back on profile generation 3: generation 4 was not confirmed by the server within 30s"})
	if d := a.next().GetDesired(); d.GetGeneration() != 4 || d.GetStorePath() != "/nix/store/ddd-web" {
		t.Fatalf("sent %v, want generation 4 again", d)
	}
	a.report(4, nixmoxv1.Stage_STAGE_HEALTHY, "")
	if c := a.next().GetConfirm(); c.GetGeneration() != 4 {
		t.Fatalf("sent %v, want a confirmation", c)
	}
	a.report(4, nixmoxv1.Stage_STAGE_CONFIRMED, "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// An unhealthy one whose failure report was lost: the rollback's own
	// log is the cause.
	if err := st.PutGeneration("web", store.Generation{Number: 5, StorePath: "/nix/store/eee-web"}); err != nil {
		t.Fatal(err)
	}
	hub.Expect("web", 5, false)
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	a.report(5, nixmoxv1.Stage_STAGE_ROLLED_BACK, "back on profile generation 4: generation 5 is unhealthy: liveness exited 1")
	if err := <-done; err == nil || err.Error() != "the agent rolled web back: back on profile generation 4: generation 5 is unhealthy: liveness exited 1" {
		t.Errorf("a rollback without its failure report: %v", err)
	}
}

// TestVerifyNamesAGenerationThatCutsItsAgentOff: a generation reverted for
// want of a confirmation while this server was up, after the agent lost
// its stream (the generation broke the agent's link), fails — it is not
// asked for again and again.
func TestVerifyNamesAGenerationThatCutsItsAgentOff(t *testing.T) {
	st, hub := newStore(t), &agents.Hub{}
	m := testManifest(t, webService)
	a := attach(t, hub, &nixmoxv1.Hello{ActiveGeneration: 3})
	hub.Expect("web", 4, false)
	v := &Verify{Store: st, Agents: hub, Deliver: &Deliver{Agents: hub}}
	done := make(chan error, 1)
	go func() { done <- v.Run(testCtx(t), &Job{M: m}, step(plan.Verify, "web")) }()
	a.report(4, nixmoxv1.Stage_STAGE_SWITCHED, "")
	hub.Detach("web", a.stream) // its route to the server is gone
	a = attach(t, hub, &nixmoxv1.Hello{ActiveGeneration: 3, FailedGeneration: 4, FailureUnconfirmed: true})
	hub.Report("web", &nixmoxv1.StageReport{Generation: 4, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Unconfirmed: true,
		Log: "reported on reconnect: generation 4 was not confirmed by the server within 5s"})
	err := <-done
	if err == nil || err.Error() != "generation 4 of web was rolled back by its agent, which could not reach the server to have it confirmed (does the generation cut the agent off?): reported on reconnect: generation 4 was not confirmed by the server within 5s" {
		t.Errorf("%v", err)
	}
	select {
	case m := <-a.stream.Outgoing():
		t.Errorf("the server asked again: %v", m)
	default:
	}
}

// waitSubscribed waits until a verify step subscribed to the service's
// reports (it reads the agent's state first).
func waitSubscribed(t *testing.T, hub *agents.Hub, svc string) {
	t.Helper()
	for range 1000 {
		if hub.Subscribers(svc) > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the verify step never subscribed to the agent's reports")
}
