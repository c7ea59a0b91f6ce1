package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server/agents"
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
	// Hub is where the agents' streams and reports go; required.
	Hub *agents.Hub

	limits   peerLimits // enrollment attempts per peer address
	refusals sampler    // the log and audit lines of refused enrollments
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
	// Nobody is authenticated yet: what a stranger can make the server do
	// is bounded — sizes first, then attempts per address — before the
	// state is touched.
	switch {
	case len(req.GetToken()) > MaxTokenBytes || len(req.GetService()) > MaxServiceBytes || len(req.GetCsrPem()) > MaxCSRBytes ||
		!manifest.ValidServiceName(req.GetService()):
		return nil, a.refuse(ctx, "invalid", codes.InvalidArgument, "enrollment refused: the request is malformed or over its size limits")
	case !a.limits.allow(ctx, a.now()):
		return nil, a.refuse(ctx, "rate", codes.ResourceExhausted, "enrollment refused: too many attempts from this address; wait a second")
	}
	svc, err := a.Store.UseToken(req.GetToken(), a.now())
	if err != nil || svc != req.GetService() {
		return nil, a.refuse(ctx, "token", codes.PermissionDenied, "enrollment refused: the token is unknown, used, expired or for another service")
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

// refuse counts a refused enrollment and logs and audits it — at most one
// line per refusalLogEvery, saying how many were refused since — so that
// strangers cannot fill the disk; it returns the caller's error.
func (a *AgentAPI) refuse(ctx context.Context, reason string, code codes.Code, msg string) error {
	a.Metrics.enrollRefused(reason)
	if ok, more := a.refusals.take(a.now(), refusalLogEvery); ok {
		from := "unknown"
		if p, ok := peer.FromContext(ctx); ok {
			from = p.Addr.String()
		}
		a.Log.Warn("enrollment refused", "reason", reason, "from", from, "refused_since_last_line", more)
		a.audit(fmt.Sprintf("enroll from %s (%d more refused before it)", from, more), "refused: "+reason)
	}
	return status.Error(code, msg)
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
	var local net.Addr
	if p, ok := peer.FromContext(stream.Context()); ok {
		local = p.LocalAddr
	}
	st := a.Hub.Attach(svc, hello, local)
	log.Info("agent connected", "generation", hello.GetActiveGeneration(), "health", hello.GetHealth())
	if fg := hello.GetFailedGeneration(); fg != 0 && hello.GetApplying() != fg {
		// Reports sent while the stream was down are lost: the hello tells
		// whoever waits for that generation how it ended — and whether it
		// was only for want of this server's confirmation.
		unconfirmed, interrupted := hello.GetFailureUnconfirmed(), hello.GetFailureInterrupted()
		a.Hub.Report(svc, &nixmoxv1.StageReport{Generation: fg, Stage: nixmoxv1.Stage_STAGE_FAILED, Log: hello.GetFailure(), Unconfirmed: unconfirmed, Interrupted: interrupted})
		a.Hub.Report(svc, &nixmoxv1.StageReport{Generation: fg, Stage: nixmoxv1.Stage_STAGE_ROLLED_BACK, Log: "reported on reconnect: " + hello.GetFailure(), Unconfirmed: unconfirmed, Interrupted: interrupted})
	}
	if g := hello.GetApplying(); g != 0 && hello.GetApplyingHealthy() {
		// Healthy and waiting for a confirmation, possibly reported while
		// the stream was down (an agent that restarted mid-switch resumes
		// before it reconnects): whoever waits for it confirms it now.
		a.Hub.Report(svc, &nixmoxv1.StageReport{Generation: g, Stage: nixmoxv1.Stage_STAGE_HEALTHY, Log: "reported on reconnect"})
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
		case m := <-st.Outgoing():
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
		case <-st.Replaced():
			reason = "replaced by a newer stream"
			break loop
		}
	}
	// Unregistered before it is logged: whoever reads the log line and
	// then asks for the status sees the agent disconnected.
	a.Hub.Detach(svc, st)
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
		a.Hub.Report(svc, m.Stage)
	}
}
