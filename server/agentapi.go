package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server/store"
)

// AgentAPI implements the agent-facing AgentService.
//
// Enroll is the one call an agent makes without a client certificate. On
// Connect, the agent's service is read from its verified certificate and
// from nothing it sends (Hello carries no service name), so an agent can
// only report for, and receive the desired generations and secrets of, its
// own service.
type AgentAPI struct {
	nixmoxv1.UnimplementedAgentServiceServer

	Store *store.Store
	CA    *pki.CA
	Log   hclog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics, if set, counts the agents' check latencies.
	Metrics *Metrics

	mu      sync.Mutex
	streams map[string]*agentStream
	waiters map[string][]chan struct{}
	subs    map[string][]chan *nixmoxv1.StageReport
}

// Subscribe delivers the service's stage reports from now on, until cancel
// is called. Reports are dropped for a subscriber that falls 64 behind.
func (a *AgentAPI) Subscribe(svc string) (reports <-chan *nixmoxv1.StageReport, cancel func()) {
	ch := make(chan *nixmoxv1.StageReport, 64)
	a.mu.Lock()
	if a.subs == nil {
		a.subs = map[string][]chan *nixmoxv1.StageReport{}
	}
	a.subs[svc] = append(a.subs[svc], ch)
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		subs := a.subs[svc]
		for i, c := range subs {
			if c == ch {
				a.subs[svc] = append(subs[:i:i], subs[i+1:]...)
				break
			}
		}
	}
}

type agentStream struct {
	send   chan *nixmoxv1.ConnectResponse
	hello  *nixmoxv1.Hello
	closed chan struct{}
	local  net.Addr // the server's address the agent reached
}

func (a *AgentAPI) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Enroll trades a one-time token for a client certificate naming the
// token's service. A token is consumed by any attempt to use it, and the
// reply never says whether a token existed.
func (a *AgentAPI) Enroll(ctx context.Context, req *nixmoxv1.EnrollRequest) (*nixmoxv1.EnrollResponse, error) {
	svc, err := a.Store.UseToken(req.GetToken(), a.now())
	if err != nil || svc != req.GetService() {
		a.Log.Warn("enrollment refused", "service", req.GetService())
		a.audit("enroll "+req.GetService(), "refused")
		return nil, status.Error(codes.PermissionDenied, "enrollment refused: the token is unknown, used, expired or for another service")
	}
	cert, err := a.CA.SignAgent(req.GetCsrPem(), svc)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	if err := a.Store.PutAgent(store.Agent{Service: svc, Enrolled: a.now()}); err != nil {
		return nil, status.Errorf(codes.Internal, "recording the agent: %v", err)
	}
	a.audit("enroll "+svc, "ok")
	a.Log.Info("agent enrolled", "service", svc)
	return &nixmoxv1.EnrollResponse{CertificatePem: cert, CaPem: a.CA.PEM}, nil
}

func (a *AgentAPI) audit(what, result string) {
	if _, err := a.Store.Audit(store.AuditEntry{Time: a.now(), Who: "agent", What: what, Result: result}); err != nil {
		a.Log.Error("audit log", "error", err)
	}
}

// serviceOf returns the service named by the caller's verified client
// certificate.
func serviceOf(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "a client certificate from enrollment is required")
	}
	svc, err := pki.AgentService(info.State.VerifiedChains[0][0])
	if err != nil {
		return "", status.Error(codes.PermissionDenied, err.Error())
	}
	return svc, nil
}

// Connect holds an agent's stream: the first message must be Hello; stage
// and health reports are recorded for the certificate's service; messages
// for the service (Send) go down the stream.
func (a *AgentAPI) Connect(stream nixmoxv1.AgentService_ConnectServer) error {
	svc, err := serviceOf(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be hello")
	}
	log := a.Log.With("service", svc)
	st := &agentStream{send: make(chan *nixmoxv1.ConnectResponse, 16), hello: hello, closed: make(chan struct{})}
	if p, ok := peer.FromContext(stream.Context()); ok {
		st.local = p.LocalAddr
	}
	a.register(svc, st)
	log.Info("agent connected", "generation", hello.GetActiveGeneration(), "health", hello.GetHealth())
	if fg := hello.GetFailedGeneration(); fg != 0 {
		// Reports sent while the stream was down are lost: the hello tells
		// whoever waits for that generation how it ended.
		a.publish(svc, &nixmoxv1.StageReport{Generation: fg, Stage: nixmoxv1.Stage_STAGE_FAILED, Log: hello.GetFailure()})
		a.publish(svc, &nixmoxv1.StageReport{Generation: fg, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Log: "reported on reconnect"})
	}
	if h := hello.GetHealth(); h != nixmoxv1.Health_HEALTH_UNSPECIFIED {
		// What the agent's monitor saw while it was away is its health now.
		log.Info("health", "check", "hello", "health", h)
		if err := a.Store.AddHealth(svc, store.HealthRecord{Time: a.now(), Check: "hello", Health: h.String()}); err != nil {
			log.Error("recording health", "error", err)
		}
	}

	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			a.record(svc, msg)
		}
	}()
	var reason any
	var sendErr error
loop:
	for {
		select {
		case m := <-st.send:
			if sendErr = stream.Send(m); sendErr != nil {
				reason = sendErr
				break loop
			}
		case err := <-recvErr:
			reason = err
			break loop
		case <-stream.Context().Done():
			reason = context.Cause(stream.Context())
			break loop
		case <-st.closed:
			reason = "replaced by a newer stream"
			break loop
		}
	}
	// Unregistered before it is logged: whoever reads the log line and
	// then asks for the status sees the agent disconnected.
	a.unregister(svc, st)
	log.Info("agent disconnected", "reason", reason)
	return sendErr
}

// record stores a report under the service the stream belongs to.
func (a *AgentAPI) record(svc string, msg *nixmoxv1.ConnectRequest) {
	switch m := msg.GetMessage().(type) {
	case *nixmoxv1.ConnectRequest_Health:
		h := m.Health
		if h.GetSample() {
			a.Metrics.checkSample(svc, h.GetCheck(), h.GetLatency().AsDuration())
			return
		}
		a.Log.Info("health", "service", svc, "check", h.GetCheck(), "health", h.GetHealth())
		if err := a.Store.AddHealth(svc, store.HealthRecord{Time: a.now(), Check: h.GetCheck(), Health: h.GetHealth().String(), Output: h.GetOutput()}); err != nil {
			a.Log.Error("recording health", "service", svc, "error", err)
		}
	case *nixmoxv1.ConnectRequest_Stage:
		a.Log.Info("stage", "service", svc, "generation", m.Stage.GetGeneration(), "stage", m.Stage.GetStage())
		if m.Stage.GetStage() == nixmoxv1.Stage_STAGE_HEALTHY {
			// The new generation just passed its checks: that is its health
			// until the agent's monitor says otherwise.
			if err := a.Store.AddHealth(svc, store.HealthRecord{Time: a.now(), Check: "switch", Health: nixmoxv1.Health_HEALTH_HEALTHY.String()}); err != nil {
				a.Log.Error("recording health", "service", svc, "error", err)
			}
		}
		a.mu.Lock()
		if st := a.streams[svc]; st != nil && m.Stage.GetStage() == nixmoxv1.Stage_STAGE_CONFIRMED {
			// The hello is the agent's state as the server knows it.
			hello := proto.Clone(st.hello).(*nixmoxv1.Hello)
			hello.ActiveGeneration, hello.Applying, hello.ApplyingHealthy = m.Stage.GetGeneration(), 0, false
			st.hello = hello
		}
		a.mu.Unlock()
		a.publish(svc, m.Stage)
	}
}

// publish hands a stage report to the service's subscribers.
func (a *AgentAPI) publish(svc string, r *nixmoxv1.StageReport) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ch := range a.subs[svc] {
		select {
		case ch <- r:
		default:
		}
	}
}

func (a *AgentAPI) register(svc string, st *agentStream) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams == nil {
		a.streams = map[string]*agentStream{}
	}
	if old := a.streams[svc]; old != nil {
		close(old.closed) // a reconnect replaces the old stream
	}
	a.streams[svc] = st
	for _, w := range a.waiters[svc] {
		close(w)
	}
	delete(a.waiters, svc)
}

func (a *AgentAPI) unregister(svc string, st *agentStream) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams[svc] == st {
		delete(a.streams, svc)
	}
}

// Hello returns the hello of the service's open stream, if any.
func (a *AgentAPI) Hello(svc string) (*nixmoxv1.Hello, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.streams[svc]; st != nil {
		return st.hello, true
	}
	return nil, false
}

// ReachedAt is the server address the service's connected agent reached
// it at, nil if it is not connected.
func (a *AgentAPI) ReachedAt(svc string) net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.streams[svc]; st != nil {
		return st.local
	}
	return nil
}

// Connected reports whether the service's agent has a stream open.
func (a *AgentAPI) Connected(svc string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.streams[svc] != nil
}

// WaitConnected returns once the service's agent is connected, or when ctx
// ends.
func (a *AgentAPI) WaitConnected(ctx context.Context, svc string) error {
	a.mu.Lock()
	if a.streams[svc] != nil {
		a.mu.Unlock()
		return nil
	}
	if a.waiters == nil {
		a.waiters = map[string][]chan struct{}{}
	}
	w := make(chan struct{})
	a.waiters[svc] = append(a.waiters[svc], w)
	a.mu.Unlock()
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
func (a *AgentAPI) Send(ctx context.Context, svc string, msg *nixmoxv1.ConnectResponse) error {
	a.mu.Lock()
	st := a.streams[svc]
	a.mu.Unlock()
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
