package agents

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func stage(gen int64, st nixmoxv1.Stage) *nixmoxv1.StageReport {
	return &nixmoxv1.StageReport{Generation: gen, Stage: st}
}

// TestSendReachesOnlyThatServicesStream: a message for a service goes down
// its stream only; a service without a stream is not connected; a newer
// stream of a service replaces the older, which is told so.
func TestSendReachesOnlyThatServicesStream(t *testing.T) {
	var h Hub
	ctx := testCtx(t)
	if err := h.Send(ctx, "web", &nixmoxv1.ConnectResponse{}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("send to an absent agent: %v, want ErrNotConnected", err)
	}
	web := h.Attach("web", &nixmoxv1.Hello{ActiveGeneration: 1}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7443})
	dns := h.Attach("dns", &nixmoxv1.Hello{}, nil)
	msg := &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Confirm{Confirm: &nixmoxv1.Confirm{Generation: 7}}}
	if err := h.Send(ctx, "web", msg); err != nil {
		t.Fatal(err)
	}
	if got := <-web.Outgoing(); got.GetConfirm().GetGeneration() != 7 {
		t.Errorf("web received %v", got)
	}
	select {
	case m := <-dns.Outgoing():
		t.Errorf("dns received web's message %v", m)
	default:
	}
	if at := h.ReachedAt("web").String(); at != "10.0.0.1:7443" {
		t.Errorf("web reached the server at %s", at)
	}
	newer := h.Attach("web", &nixmoxv1.Hello{ActiveGeneration: 2}, nil)
	select {
	case <-web.Replaced():
	default:
		t.Error("the older stream was not told it was replaced")
	}
	h.Detach("web", web) // the older one going away leaves the newer
	if st, ok := h.State("web"); !ok || st.GetActiveGeneration() != 2 {
		t.Errorf("state after the older stream left: %v %v", st, ok)
	}
	h.Detach("web", newer)
	if h.Connected("web") {
		t.Error("web still connected after its stream left")
	}
}

// TestWaitConnected returns when the agent attaches, or when ctx ends.
func TestWaitConnected(t *testing.T) {
	var h Hub
	done := make(chan error, 1)
	go func() { done <- h.WaitConnected(testCtx(t), "web") }()
	// WaitConnected registers its waiter before it blocks; attaching
	// releases every waiter, so there is no race with the goroutine: if
	// it registers after the attach it finds the stream.
	h.Attach("web", &nixmoxv1.Hello{}, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.WaitConnected(ctx, "dns"); !errors.Is(err, context.Canceled) {
		t.Errorf("waiting for an absent agent with a cancelled context: %v", err)
	}
}

// TestReportsAndState: reports reach every subscriber of the service and
// no other; a confirmed generation becomes the agent's active one in its
// state (which a reattaching verify acts on); a cancelled subscription
// gets nothing more.
func TestReportsAndState(t *testing.T) {
	var h Hub
	h.Attach("web", &nixmoxv1.Hello{ActiveGeneration: 1, Applying: 2, ApplyingHealthy: true}, nil)
	a, cancelA := h.Subscribe("web")
	b, cancelB := h.Subscribe("web")
	other, cancelOther := h.Subscribe("dns")
	defer cancelB()
	defer cancelOther()
	h.Report("web", stage(2, nixmoxv1.Stage_STAGE_CONFIRMED))
	for _, ch := range []<-chan *nixmoxv1.StageReport{a, b} {
		if r := <-ch; r.GetGeneration() != 2 {
			t.Errorf("report %v", r)
		}
	}
	select {
	case r := <-other:
		t.Errorf("dns's subscriber got web's report %v", r)
	default:
	}
	st, _ := h.State("web")
	if st.GetActiveGeneration() != 2 || st.GetApplying() != 0 || st.GetApplyingHealthy() {
		t.Errorf("state after confirming 2: %v", st)
	}
	cancelA()
	h.Report("web", stage(3, nixmoxv1.Stage_STAGE_HEALTHY))
	select {
	case r := <-a:
		t.Errorf("a cancelled subscription got %v", r)
	default:
	}
}

// TestExpectAndTake: the generation handed out is taken once by its
// verify step, with the reports since it was handed out; expecting a newer
// one cancels the older subscription.
func TestExpectAndTake(t *testing.T) {
	var h Hub
	h.Expect("web", 4, false)
	h.Expect("web", 5, true)
	h.Report("web", stage(5, nixmoxv1.Stage_STAGE_HEALTHY))
	p := h.Take("web")
	if p == nil || p.Generation != 5 || !p.NoRollback {
		t.Fatalf("taken %+v, want generation 5 without rollback", p)
	}
	defer p.Cancel()
	if r := <-p.Reports; r.GetGeneration() != 5 {
		t.Errorf("report %v", r)
	}
	if again := h.Take("web"); again != nil {
		t.Errorf("taken twice: %+v", again)
	}
	h.mu.Lock()
	subs := len(h.subs["web"])
	h.mu.Unlock()
	if subs != 1 {
		t.Errorf("%d subscriptions of web, want 1: the replaced expectation's was not cancelled", subs)
	}
}

// TestStateFollowsReports: the agent's state is what it reported last —
// applying, healthy, confirmed, failed (and why, and whether only for want
// of a confirmation), rolled back — not what it said when it connected.
func TestStateFollowsReports(t *testing.T) {
	var h Hub
	h.Attach("web", &nixmoxv1.Hello{ActiveGeneration: 4, Applying: 5}, nil) // it connected mid-switch
	for _, tc := range []struct {
		r    *nixmoxv1.StageReport
		want string
	}{
		{&nixmoxv1.StageReport{Generation: 5, Stage: nixmoxv1.Stage_STAGE_HEALTHY}, "active:4 applying:5 healthy:true failed:0 unconfirmed:false failure:"},
		{&nixmoxv1.StageReport{Generation: 5, Stage: nixmoxv1.Stage_STAGE_FAILED, Unconfirmed: true, Log: "not confirmed within 30s"}, "active:4 applying:5 healthy:false failed:5 unconfirmed:true failure:not confirmed within 30s"},
		{&nixmoxv1.StageReport{Generation: 5, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Unconfirmed: true, Log: "back on 4"}, "active:4 applying:0 healthy:false failed:5 unconfirmed:true failure:not confirmed within 30s"},
		{&nixmoxv1.StageReport{Generation: 5, Stage: nixmoxv1.Stage_STAGE_SWITCHED}, "active:4 applying:5 healthy:false failed:5 unconfirmed:true failure:not confirmed within 30s"},
		{&nixmoxv1.StageReport{Generation: 5, Stage: nixmoxv1.Stage_STAGE_CONFIRMED}, "active:5 applying:0 healthy:false failed:5 unconfirmed:true failure:not confirmed within 30s"},
		// A rollback whose failure report was lost carries the cause.
		{&nixmoxv1.StageReport{Generation: 6, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Log: "back on 5: unhealthy"}, "active:5 applying:0 healthy:false failed:6 unconfirmed:false failure:back on 5: unhealthy"},
	} {
		h.Report("web", tc.r)
		s, _ := h.State("web")
		got := fmt.Sprintf("active:%d applying:%d healthy:%t failed:%d unconfirmed:%t failure:%s", s.GetActiveGeneration(), s.GetApplying(),
			s.GetApplyingHealthy(), s.GetFailedGeneration(), s.GetFailureUnconfirmed(), s.GetFailure())
		if got != tc.want {
			t.Errorf("after %v:\n got %s\nwant %s", tc.r, got, tc.want)
		}
	}
}
