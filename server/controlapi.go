package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/pki"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/provider"
	"github.com/nixmox/nixmox/server/rollout"
	"github.com/nixmox/nixmox/server/store"
)

// ControlAPI implements the CLI-facing ControlService. It is served on the
// server's unix socket, whose file permissions are its access control.
type ControlAPI struct {
	nixmoxv1.UnimplementedControlServiceServer

	Store      *store.Store
	Agents     *agents.Hub
	CA         *pki.CA
	Controller *Controller
	Now        func() time.Time

	mu            sync.Mutex
	parsed        *manifest.Manifest // the newest stored manifest, decoded
	parsedVersion uint64
}

// enabled returns the names of the newest stored manifest's enabled
// services, and whether a manifest was ever applied. The decoded manifest
// is kept until a newer version is stored: status is asked for often.
func (c *ControlAPI) enabled() ([]string, bool) {
	sm, err := c.Store.Manifest(0)
	if err != nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parsed == nil || c.parsedVersion != sm.Version {
		m, err := manifest.Parse(sm.JSON, manifest.FormatJSON, sm.File)
		if err != nil {
			return nil, true
		}
		c.parsed, c.parsedVersion = m, sm.Version
	}
	var names []string
	for _, s := range c.parsed.Enabled() {
		names = append(names, s.Name)
	}
	return names, true
}

// Apply runs a rollout and streams its events. A second Apply while one
// runs is refused, naming the running rollout.
func (c *ControlAPI) Apply(req *nixmoxv1.ApplyRequest, stream nixmoxv1.ControlService_ApplyServer) error {
	_, err := c.Controller.Apply(stream.Context(), req, callerOf(stream.Context()), func(e *nixmoxv1.RolloutEvent) {
		_ = stream.Send(&nixmoxv1.ApplyResponse{Event: e})
	})
	var locked *store.LockedError
	var invalid *manifest.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &locked):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &invalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (c *ControlAPI) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// IssueToken creates a one-time enrollment token. Only its hash is stored;
// the token itself is returned once.
func (c *ControlAPI) IssueToken(ctx context.Context, req *nixmoxv1.IssueTokenRequest) (*nixmoxv1.IssueTokenResponse, error) {
	svc := req.GetService()
	if !manifest.ValidServiceName(svc) {
		return nil, status.Errorf(codes.InvalidArgument, "%q is not a service name", svc)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = time.Hour
	}
	token, err := issueToken(c.Store, svc, ttl, callerOf(ctx), c.now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &nixmoxv1.IssueTokenResponse{Token: token, CaPem: c.CA.PEM}, nil
}

// Status reports every enrolled agent's service: connected or not, and its
// last reported health.
func (c *ControlAPI) Status(ctx context.Context, _ *nixmoxv1.StatusRequest) (*nixmoxv1.StatusResponse, error) {
	agents, err := c.Store.Agents()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// Every enabled service of the applied manifest — a service removed
	// from it leaves status and /metrics (its alert would fire forever);
	// before the first apply, every enrolled agent.
	names := map[string]bool{}
	if enabled, applied := c.enabled(); applied {
		for _, name := range enabled {
			names[name] = true
		}
	} else {
		for _, a := range agents {
			names[a.Service] = true
		}
	}
	last, err := c.lastResults(names)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var nodes map[string]string
	if c.Controller != nil && c.Controller.Steps != nil && c.Controller.Steps.Containers != nil {
		if l, ok := c.Controller.Steps.Containers.Provider.(provider.Locator); ok {
			nodes = l.Nodes()
		}
	}
	resp := &nixmoxv1.StatusResponse{}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		st := &nixmoxv1.ServiceStatus{Name: name, AgentConnected: c.Agents.Connected(name), LastResult: last[name], Node: nodes[name]}
		gens, err := c.Store.Generations(name)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if n := len(gens); n > 0 {
			st.DesiredGeneration = gens[n-1].Number
			for i := n - 1; i >= 0; i-- {
				if gens[i].Healthy {
					st.Generation = gens[i].Number
					break
				}
			}
		}
		if hello, ok := c.Agents.State(name); ok {
			// What the connected agent says beats what the server inferred.
			st.Generation = hello.GetActiveGeneration()
			st.Health = hello.GetHealth()
		}
		if hs, err := c.Store.Health(name, 1); err == nil && len(hs) == 1 {
			st.LastReport = timestamppb.New(hs[0].Time)
			if v, ok := nixmoxv1.Health_value[hs[0].Health]; ok {
				st.Health = nixmoxv1.Health(v)
			}
		}
		if !st.AgentConnected {
			// Its last report is history, not its health now.
			st.Health = nixmoxv1.Health_HEALTH_UNSPECIFIED
		}
		resp.Services = append(resp.Services, st)
	}
	return resp, nil
}

// lastResults is, per service, the state of its verify step in the newest
// rollout that ran it (not one where it was unchanged). It reads rollouts
// newest first and stops once every service has one.
func (c *ControlAPI) lastResults(names map[string]bool) (map[string]nixmoxv1.StepState, error) {
	rs, err := c.Store.Rollouts(50)
	if err != nil {
		return nil, err
	}
	out := map[string]nixmoxv1.StepState{}
	for _, r := range rs { // newest first
		if len(out) == len(names) {
			break
		}
		steps, err := c.Store.Steps(r.ID)
		if err != nil {
			return nil, err
		}
		for id, st := range steps {
			svc, ok := strings.CutPrefix(id, "verify:")
			if !ok || !names[svc] {
				continue
			}
			// Unchanged is not a result: the one that made it so is.
			if _, seen := out[svc]; !seen && rollout.State(st.State) != rollout.Skipped {
				out[svc] = stateOf(rollout.State(st.State))
			}
		}
	}
	return out, nil
}

// History lists past rollouts, newest first.
func (c *ControlAPI) History(ctx context.Context, req *nixmoxv1.HistoryRequest) (*nixmoxv1.HistoryResponse, error) {
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	rs, err := c.Store.Rollouts(limit)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &nixmoxv1.HistoryResponse{}
	for _, r := range rs {
		sum := &nixmoxv1.RolloutSummary{Id: r.ID, Started: timestamppb.New(r.Started), Ok: r.OK, Who: r.Who, Summary: r.Summary}
		if !r.Finished.IsZero() {
			sum.Finished = timestamppb.New(r.Finished)
		}
		if m, err := c.Store.Manifest(r.Manifest); err == nil {
			sum.ManifestFile = m.File
		}
		resp.Rollouts = append(resp.Rollouts, sum)
	}
	return resp, nil
}

// Unlock clears the rollout lock when the named rollout holds it.
func (c *ControlAPI) Unlock(ctx context.Context, req *nixmoxv1.UnlockRequest) (*nixmoxv1.UnlockResponse, error) {
	holder, err := c.Store.LockHolder()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if holder == "" {
		return nil, status.Error(codes.FailedPrecondition, "no rollout holds the lock")
	}
	// The lock is for a rollout whose server died; this server's own
	// running rollout is alive, and unlocking it would let a second one
	// run beside it.
	if running := c.Controller.Running(); running == holder {
		return nil, status.Errorf(codes.FailedPrecondition, "rollout %s is running in this server: wait for it to finish (nixmox-cli watch), or stop the server to abandon it", holder)
	}
	if err := c.Store.Unlock(req.GetRolloutId()); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	_, _ = c.Store.Audit(store.AuditEntry{Time: c.now(), Who: callerOf(ctx), What: "unlock " + holder, Result: "ok"})
	return &nixmoxv1.UnlockResponse{}, nil
}

// Watch streams every rollout event until the client goes away.
func (c *ControlAPI) Watch(_ *nixmoxv1.WatchRequest, stream nixmoxv1.ControlService_WatchServer) error {
	events, cancel := c.Controller.Watch()
	defer cancel()
	// Said once subscribed, so a client knows it will miss nothing from here.
	if err := stream.Send(&nixmoxv1.WatchResponse{Event: &nixmoxv1.RolloutEvent{Time: timestamppb.Now(), Message: "watching rollouts"}}); err != nil {
		return err
	}
	for {
		select {
		case e := <-events:
			if err := stream.Send(&nixmoxv1.WatchResponse{Event: e}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// Rollback sets a service back to an earlier generation and streams how it
// goes.
func (c *ControlAPI) Rollback(req *nixmoxv1.RollbackRequest, stream nixmoxv1.ControlService_RollbackServer) error {
	err := c.Controller.Rollback(stream.Context(), req.GetService(), req.GetToGeneration(), callerOf(stream.Context()), func(e *nixmoxv1.RolloutEvent) {
		_ = stream.Send(&nixmoxv1.RollbackResponse{Event: e})
	})
	if err != nil {
		// A running rollout, an unknown service, no earlier generation, or
		// a failed deploy: the state is not what a rollback needs.
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return nil
}

// Logs streams the stored record of a rollout's steps (or of one step),
// in the order they started.
func (c *ControlAPI) Logs(req *nixmoxv1.LogsRequest, stream nixmoxv1.ControlService_LogsServer) error {
	if _, err := c.Store.Rollout(req.GetRolloutId()); err != nil {
		return status.Errorf(codes.NotFound, "no rollout %q", req.GetRolloutId())
	}
	steps, err := c.Store.Steps(req.GetRolloutId())
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if req.GetStep() != "" {
		st, ok := steps[req.GetStep()]
		if !ok {
			return status.Errorf(codes.NotFound, "rollout %s has no step %q", req.GetRolloutId(), req.GetStep())
		}
		steps = map[string]store.StepRecord{st.ID: st}
	}
	recs := slices.SortedFunc(maps.Values(steps), func(a, b store.StepRecord) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, r := range recs {
		at := r.Finished
		if at.IsZero() {
			at = r.Started
		}
		e := &nixmoxv1.RolloutEvent{RolloutId: req.GetRolloutId(), Time: timestamppb.New(at), Step: r.ID, State: stateOf(rollout.State(r.State)), Message: r.Error,
			Needs: r.Needs, RootStep: r.Root}
		if err := stream.Send(&nixmoxv1.LogsResponse{Event: e}); err != nil {
			return err
		}
	}
	return nil
}

// issueToken records a new one-time enrollment token for service, valid
// for ttl from now, and audits who asked for it.
func issueToken(st *store.Store, service string, ttl time.Duration, who string, now time.Time) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	if err := st.PutToken(token, service, now.Add(ttl)); err != nil {
		return "", err
	}
	if _, err := st.Audit(store.AuditEntry{Time: now, Who: who, What: "issue token for " + service, Result: "ok"}); err != nil {
		return "", err
	}
	return token, nil
}

// enrollFile issues a one-time token for a new container's agent, on the
// provider's behalf, and returns its enroll file (the token and the CA).
func enrollFile(st *store.Store, ca *pki.CA, service string) ([]byte, error) {
	token, err := issueToken(st, service, time.Hour, "provider", time.Now())
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"token": token, "ca_pem": string(ca.PEM)})
}

// Outputs lists stored Terraform outputs; a sensitive one is named and
// marked, never sent.
func (c *ControlAPI) Outputs(ctx context.Context, req *nixmoxv1.OutputsRequest) (*nixmoxv1.OutputsResponse, error) {
	all, err := c.Store.AllOutputs()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	svc := req.GetService()
	resp := &nixmoxv1.OutputsResponse{}
	for _, o := range all {
		if svc != "" && o.Root != "terraform/services/"+svc && o.Root != "terraform/services/"+svc+"/config" {
			continue
		}
		for _, out := range o.Outputs {
			po := &nixmoxv1.Output{Root: o.Root, Name: out.Name, Sensitive: out.Sensitive}
			if !out.Sensitive {
				po.ValueJson = string(out.Value)
			}
			resp.Outputs = append(resp.Outputs, po)
		}
	}
	return resp, nil
}
