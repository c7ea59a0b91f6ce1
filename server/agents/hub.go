// Package agents is the agents hub: where nixmox-server meets its agents.
// It holds each service's open stream, the agent's state as the server
// last learnt it, subscriptions to the agent's stage reports, and the
// generation each service's verify step is waiting for. The gRPC service
// (server.AgentAPI) attaches streams and feeds reports in; the step
// runners send to agents and wait on their stages through it. It knows
// nothing of rollouts.
package agents

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// Hub is the agents hub. The zero value is ready to use.
type Hub struct {
	mu      sync.Mutex
	streams map[string]*Stream
	waiters map[string][]chan struct{}
	subs    map[string][]chan *nixmoxv1.StageReport
	pending map[string]*Pending
	gone    map[string]time.Time // when each service's last stream ended
	attach  map[string]uint64    // how many streams each service has had
}

// Stream is one agent's open stream as the hub sees it: what to send down
// it, and when it was replaced by a newer one.
type Stream struct {
	send   chan *nixmoxv1.ConnectResponse
	state  *nixmoxv1.Hello
	closed chan struct{}
	local  net.Addr // the server's address the agent reached
}

// Outgoing is what the hub queued for the agent, in order.
func (s *Stream) Outgoing() <-chan *nixmoxv1.ConnectResponse { return s.send }

// Replaced is closed when a newer stream of the same service replaced this
// one: its holder ends it.
func (s *Stream) Replaced() <-chan struct{} { return s.closed }

// Attach registers the service's new stream, whose agent said hello and
// reached the server at local; an older stream of the service is replaced.
// Whoever waits for the agent to connect is released.
func (h *Hub) Attach(svc string, hello *nixmoxv1.Hello, local net.Addr) *Stream {
	st := &Stream{send: make(chan *nixmoxv1.ConnectResponse, 16), state: hello, closed: make(chan struct{}), local: local}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams == nil {
		h.streams = map[string]*Stream{}
	}
	if old := h.streams[svc]; old != nil {
		close(old.closed)
	}
	h.streams[svc] = st
	delete(h.gone, svc)
	if h.attach == nil {
		h.attach = map[string]uint64{}
	}
	h.attach[svc]++
	for _, w := range h.waiters[svc] {
		close(w)
	}
	delete(h.waiters, svc)
	return st
}

// Detach removes the service's stream st, unless a newer one replaced it.
func (h *Hub) Detach(svc string, st *Stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[svc] == st {
		delete(h.streams, svc)
		if h.gone == nil {
			h.gone = map[string]time.Time{}
		}
		h.gone[svc] = time.Now()
	}
}

// Attaches is how many streams the service's agent has opened: a change
// means it reconnected (perhaps as a new process that lost what it was
// doing).
func (h *Hub) Attaches(svc string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attach[svc]
}

// DisconnectedSince reports when the service's agent's stream ended, if it
// had one and is not connected now.
func (h *Hub) DisconnectedSince(svc string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[svc] != nil {
		return time.Time{}, false
	}
	t, ok := h.gone[svc]
	return t, ok
}

// Report hands a stage report of the service's agent to its subscribers,
// and keeps the agent's state current with it: the server acts on what the
// agent reported last, not on what it said when it connected.
func (h *Hub) Report(svc string, r *nixmoxv1.StageReport) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.streams[svc]; st != nil {
		st.state = advance(st.state, r)
	}
	for _, ch := range h.subs[svc] {
		select {
		case ch <- r:
		default: // a subscriber 64 behind loses reports
		}
	}
}

// advance is the agent's state after report r.
func advance(state *nixmoxv1.Hello, r *nixmoxv1.StageReport) *nixmoxv1.Hello {
	s := proto.Clone(state).(*nixmoxv1.Hello)
	g := r.GetGeneration()
	switch r.GetStage() {
	case nixmoxv1.Stage_STAGE_PULLED, nixmoxv1.Stage_STAGE_SWITCHED:
		s.Applying, s.ApplyingHealthy = g, false
	case nixmoxv1.Stage_STAGE_HEALTHY:
		s.Applying, s.ApplyingHealthy = g, true
	case nixmoxv1.Stage_STAGE_CONFIRMED:
		s.ActiveGeneration, s.Applying, s.ApplyingHealthy = g, 0, false
	case nixmoxv1.Stage_STAGE_FAILED:
		s.FailedGeneration, s.FailureUnconfirmed, s.ApplyingHealthy = g, r.GetUnconfirmed(), false
		if r.GetLog() != "" {
			s.Failure = r.GetLog()
		}
	case nixmoxv1.Stage_STAGE_ROLLED_BACK:
		if s.FailedGeneration != g || s.Failure == "" {
			s.Failure = r.GetLog() // its failure report was lost: this one says why too
		}
		s.FailedGeneration, s.FailureUnconfirmed = g, r.GetUnconfirmed()
		if s.Applying == g {
			s.Applying, s.ApplyingHealthy = 0, false
		}
	}
	return s
}

// Subscribe delivers the service's stage reports from now on, until cancel
// is called. Reports are dropped for a subscriber that falls 64 behind.
func (h *Hub) Subscribe(svc string) (reports <-chan *nixmoxv1.StageReport, cancel func()) {
	ch := make(chan *nixmoxv1.StageReport, 64)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[string][]chan *nixmoxv1.StageReport{}
	}
	h.subs[svc] = append(h.subs[svc], ch)
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		subs := h.subs[svc]
		for i, c := range subs {
			if c == ch {
				h.subs[svc] = append(subs[:i:i], subs[i+1:]...)
				break
			}
		}
	}
}

// Subscribers is how many subscriptions to the service's reports are open.
func (h *Hub) Subscribers(svc string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[svc])
}

// State returns the service's connected agent's state: its hello, with
// the generations it confirmed since.
func (h *Hub) State(svc string) (*nixmoxv1.Hello, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.streams[svc]; st != nil {
		return st.state, true
	}
	return nil, false
}

// ReachedAt is the server address the service's connected agent reached
// it at, nil if it is not connected.
func (h *Hub) ReachedAt(svc string) net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.streams[svc]; st != nil {
		return st.local
	}
	return nil
}

// Connected reports whether the service's agent has a stream open.
func (h *Hub) Connected(svc string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[svc] != nil
}

// WaitConnected returns once the service's agent is connected, or when ctx
// ends.
func (h *Hub) WaitConnected(ctx context.Context, svc string) error {
	h.mu.Lock()
	if h.streams[svc] != nil {
		h.mu.Unlock()
		return nil
	}
	if h.waiters == nil {
		h.waiters = map[string][]chan struct{}{}
	}
	w := make(chan struct{})
	h.waiters[svc] = append(h.waiters[svc], w)
	h.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrNotConnected is returned by Send when the service has no agent stream.
var ErrNotConnected = errors.New("the service's agent is not connected")

// Send queues a message for the service's agent only.
func (h *Hub) Send(ctx context.Context, svc string, msg *nixmoxv1.ConnectResponse) error {
	h.mu.Lock()
	st := h.streams[svc]
	h.mu.Unlock()
	if st == nil {
		return fmt.Errorf("%s: %w", svc, ErrNotConnected)
	}
	select {
	case st.send <- msg:
		return nil
	case <-st.closed:
		return fmt.Errorf("%s: %w", svc, ErrNotConnected)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pending is a generation handed to a service's agent whose outcome a
// verify step waits for: the reports since it was handed out.
type Pending struct {
	Generation int64
	NoRollback bool // the agent leaves it in place when it fails
	// Resumed is set for a generation a previous server process handed
	// out: if the agent reverted it for want of a confirmation, that was
	// the server's absence, and it is asked for again (once).
	Resumed bool
	// Asked is set when the generation was just asked for again: reports
	// of its earlier attempt are stale until the agent starts it anew.
	Asked   bool
	Reports <-chan *nixmoxv1.StageReport
	// Cancel ends the subscription; the verify step calls it when done.
	Cancel func()
}

// Expect subscribes to the service's reports for generation gen, which is
// about to be handed out, and keeps the subscription for Take; one expected
// before for the service is cancelled.
func (h *Hub) Expect(svc string, gen int64, noRollback bool) {
	reports, cancel := h.Subscribe(svc)
	h.mu.Lock()
	if h.pending == nil {
		h.pending = map[string]*Pending{}
	}
	old := h.pending[svc]
	h.pending[svc] = &Pending{Generation: gen, NoRollback: noRollback, Reports: reports, Cancel: cancel}
	h.mu.Unlock()
	if old != nil {
		old.Cancel() // takes h.mu
	}
}

// Take returns and forgets the generation expected for the service, nil
// when there is none (its nix step did not run in this server's life).
func (h *Hub) Take(svc string) *Pending {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pending[svc]
	delete(h.pending, svc)
	return p
}
