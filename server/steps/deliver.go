package steps

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/store"
)

// Agents is what the runners need of the agents hub (agents.Hub).
type Agents interface {
	Send(ctx context.Context, svc string, msg *nixmoxv1.ConnectResponse) error
	WaitConnected(ctx context.Context, svc string) error
	Subscribe(svc string) (<-chan *nixmoxv1.StageReport, func())
	State(svc string) (*nixmoxv1.Hello, bool)
	ReachedAt(svc string) net.Addr
	Expect(svc string, gen int64, noRollback bool)
	Take(svc string) *agents.Pending
	DisconnectedSince(svc string) (time.Time, bool)
	Attaches(svc string) uint64
}

var _ Agents = (*agents.Hub)(nil)

// Deliver hands a generation to a service's agent: it records it as the
// service's next generation, then sends the service's secrets and the
// desired generation, and leaves the waiting for its outcome to Verify.
type Deliver struct {
	Store  *store.Store
	Agents Agents
	// ConfirmTimeout is how long the agent waits for confirmation; 0 means
	// 30 s.
	ConfirmTimeout time.Duration
	// CacheDir and CachePublicKey: the binary cache agents pull from, ""
	// for none. CacheURL is its URL for agents ("" = file://CacheDir);
	// with CachePort instead it is http:// on that port at whichever
	// address the agent reached the server by.
	CacheDir, CachePublicKey string
	CacheURL, CachePort      string
}

// Generation records path as the service's next generation and hands it,
// with the service's secrets, to its agent.
func (d *Deliver) Generation(ctx context.Context, m *manifest.Manifest, svc *manifest.Service, path string, secrets map[string][]byte, noRollback bool) error {
	gens, err := d.Store.Generations(svc.Name)
	if err != nil {
		return err
	}
	gen := int64(1)
	if n := len(gens); n > 0 {
		gen = gens[n-1].Number + 1
	}
	if err := d.Store.PutGeneration(svc.Name, store.Generation{Number: gen, StorePath: path, Created: time.Now()}); err != nil {
		return err
	}
	wait, cancel := context.WithTimeout(ctx, time.Duration(m.HealthCheckTimeout)*time.Second)
	defer cancel()
	if err := d.Agents.WaitConnected(wait, svc.Name); err != nil {
		return fmt.Errorf("the agent of %s did not connect within %ds", svc.Name, m.HealthCheckTimeout)
	}
	d.Agents.Expect(svc.Name, gen, noRollback)
	// The secrets first: the agent writes them before it activates.
	if err := d.Agents.Send(ctx, svc.Name, &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Secrets{Secrets: &nixmoxv1.Secrets{Values: secrets}}}); err != nil {
		return err
	}
	return d.Agents.Send(ctx, svc.Name, d.desired(svc, gen, path, noRollback))
}

// desired is the message asking an agent to switch to a generation, pulled
// from the server's cache when there is one.
func (d *Deliver) desired(svc *manifest.Service, gen int64, path string, noRollback bool) *nixmoxv1.ConnectResponse {
	cacheURL, key := "", ""
	if d.CacheDir != "" {
		cacheURL, key = "file://"+d.CacheDir, d.CachePublicKey
		if d.CacheURL != "" {
			cacheURL = d.CacheURL
		} else if at, ok := d.Agents.ReachedAt(svc.Name).(*net.TCPAddr); ok && d.CachePort != "" {
			cacheURL = "http://" + net.JoinHostPort(at.IP.String(), d.CachePort)
		}
	}
	confirm := d.ConfirmTimeout
	if confirm <= 0 {
		confirm = 30 * time.Second
	}
	h := HealthSpec(svc)
	return &nixmoxv1.ConnectResponse{Message: &nixmoxv1.ConnectResponse_Desired{Desired: &nixmoxv1.DesiredGeneration{
		Generation: gen, StorePath: path, ConfirmTimeout: durationpb.New(confirm),
		CacheUrl: cacheURL, CachePublicKey: key, NoRollback: noRollback,
		Health: &nixmoxv1.HealthSpec{
			Startup: h.Startup, Liveness: h.Liveness, Readiness: h.Readiness,
			Interval: durationpb.New(h.Interval), Timeout: durationpb.New(h.Timeout),
			Retries: int32(h.Retries), StartPeriod: durationpb.New(h.StartPeriod),
		},
	}}}
}

// HealthSpec is a service's health checks with the manifest's defaults.
func HealthSpec(svc *manifest.Service) health.Spec {
	h := svc.Interface.Health
	if h == nil {
		h = &manifest.Health{Interval: 30, Timeout: 60, Retries: 3}
	}
	return health.Spec{Startup: h.Startup, Liveness: h.Liveness, Readiness: h.Readiness,
		Interval: time.Duration(h.Interval) * time.Second, Timeout: time.Duration(h.Timeout) * time.Second,
		Retries: h.Retries, StartPeriod: time.Duration(h.StartPeriod) * time.Second}
}

// Deploy runs a service's nix step (nix:core, nix:service-config): Build
// its closure, then Deliver it to its agent.
type Deploy struct {
	Build   *Build
	Deliver *Deliver
}

// Fingerprint implements Runner: the service's slice of the manifest and
// its closure (derivation and secrets).
func (d *Deploy) Fingerprint(ctx context.Context, j *Job, s plan.Step) (string, error) {
	return fingerprintService(ctx, d.Build, j, s)
}

// Run implements Runner.
func (d *Deploy) Run(ctx context.Context, j *Job, s plan.Step) error {
	svc := j.M.Service(s.Service)
	path, secrets, err := d.Build.Closure(ctx, j, svc)
	if err != nil {
		return err
	}
	return d.Deliver.Generation(ctx, j.M, svc, path, secrets, j.NoRollback)
}

// Again hands a service's agent an earlier generation's closure (a
// rollback) as a new generation: published to the cache again, with the
// service's secrets as they are now.
func (d *Deploy) Again(ctx context.Context, j *Job, svc *manifest.Service, path string) error {
	_, secrets, err := d.Build.closureArgs(j, svc)
	if err != nil {
		return err
	}
	if err := d.Build.Publish(ctx, path); err != nil {
		return err
	}
	return d.Deliver.Generation(ctx, j.M, svc, path, secrets, false)
}

// fingerprintService is the fingerprint of a service's nix and verify
// steps: its slice of the manifest and its closure.
func fingerprintService(ctx context.Context, b *Build, j *Job, s plan.Step) (string, error) {
	h := newHash(s)
	if err := hashManifest(h, j, s); err != nil {
		return "", err
	}
	if err := b.hashClosure(ctx, h, j, j.M.Service(s.Service)); err != nil {
		return "", err
	}
	return sum(h), nil
}
