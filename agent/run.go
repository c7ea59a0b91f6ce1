package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nixmox/nixmox/internal/atomicfile"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/health"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/pki"
)

// Version is the agent's version, reported in Hello.
const Version = "0.1.0-dev"

// EnrollFile is what `nixmox-server token` writes and the container gets:
// the one-time token and the CA to verify the server with.
type EnrollFile struct {
	Token string `json:"token"`
	CAPEM string `json:"ca_pem"`
}

// Config is how the agent runs.
type Config struct {
	Server     string // host:port of the server's agent listener
	Service    string
	EnrollFile string // read once, for enrollment
	StateDir   string // key, certificate, CA; created 0700
	Profile    string // the system profile it switches
	// CurrentSystem is the running NixOS system's link
	// (/run/current-system); "" where the profile is not a NixOS system's.
	CurrentSystem string
	// SystemdRun is systemd-run, which runs each activation as a
	// transient unit; "" runs them in a session of their own.
	SystemdRun string
	Log        hclog.Logger
	// After and Jitter are the reconnect backoff's clock and random source
	// (tests); nil means time.After and math/rand.
	After  func(time.Duration) <-chan time.Time
	Jitter func() float64
}

// Run enrolls if needed, then holds the stream to the server, reconnecting
// with backoff after any error, until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	after := cfg.After
	if after == nil {
		after = time.After
	}
	b := backoff{jitter: cfg.Jitter}
	var creds credentials.TransportCredentials
	for {
		var err error
		if creds, err = credentialsFor(ctx, cfg, log); err == nil {
			break
		}
		// A server that is not there yet, or that asks enrollments to slow
		// down (it limits them per address), is waited for; anything else
		// (a used or forged token) ends the agent.
		if c := status.Code(errors.Unwrap(err)); c != codes.Unavailable && c != codes.ResourceExhausted && c != codes.DeadlineExceeded {
			return err
		}
		wait := b.next(false)
		log.Warn("enrolling failed; trying again", "error", err, "in", wait)
		if !sleep(ctx, after, wait) {
			return nil
		}
	}
	st := newState(cfg, log)
	st.recover(ctx)
	// The active generation's checks, as recorded when it was confirmed.
	if data, err := os.ReadFile(filepath.Join(cfg.StateDir, "health.json")); err == nil {
		var spec health.Spec
		if err := json.Unmarshal(data, &spec); err == nil && st.active > 0 {
			st.activeSpec = &spec
			st.monitor(ctx, spec)
		}
	}
	defer func() {
		st.mu.Lock()
		st.stopMonitor()
		st.mu.Unlock()
	}()
	b = backoff{jitter: cfg.Jitter}
	for {
		connected, err := session(ctx, cfg, creds, st)
		if ctx.Err() != nil {
			return nil
		}
		wait := b.next(connected)
		log.Warn("stream ended; reconnecting", "error", err, "in", wait)
		if !sleep(ctx, after, wait) {
			return nil
		}
	}
}

// sleep waits d on the clock after; false when ctx ended first.
func sleep(ctx context.Context, after func(time.Duration) <-chan time.Time, d time.Duration) bool {
	select {
	case <-after(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// MaxReconnectDelay caps the agent's wait between attempts to reach the
// server (before the jitter).
const MaxReconnectDelay = 5 * time.Second

// backoff is the wait before reconnecting: 1 s, doubling after each failed
// attempt up to MaxReconnectDelay, back to 1 s once a stream was open (the
// backoff is for failing to connect, not for losing a stream), each times a
// jitter of 0.5 to 1.5 so that agents do not reconnect in step. The cap is
// low: a restarted server's rollout waits on its agents, and an attempt
// every few seconds costs a homelab's server nothing.
type backoff struct {
	delay  time.Duration
	jitter func() float64 // [0, 1); nil means math/rand
}

func (b *backoff) next(connected bool) time.Duration {
	if b.delay == 0 || connected {
		b.delay = time.Second
	}
	j := b.jitter
	if j == nil {
		j = rand.Float64
	}
	wait := time.Duration(float64(b.delay) * (0.5 + j()))
	b.delay = min(b.delay*2, MaxReconnectDelay)
	return wait
}

// credentialsFor returns the agent's mTLS credentials, enrolling first
// when it has no certificate yet.
func credentialsFor(ctx context.Context, cfg Config, log hclog.Logger) (credentials.TransportCredentials, error) {
	keyPath, certPath, caPath := filepath.Join(cfg.StateDir, "agent-key.pem"), filepath.Join(cfg.StateDir, "agent.pem"), filepath.Join(cfg.StateDir, "ca.pem")
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		if err := enroll(ctx, cfg, keyPath, certPath, caPath); err != nil {
			return nil, fmt.Errorf("enrolling: %w", err)
		}
		log.Info("enrolled", "service", cfg.Service)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the stored CA is not PEM")
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}), nil
}

func enroll(ctx context.Context, cfg Config, keyPath, certPath, caPath string) error {
	data, err := os.ReadFile(cfg.EnrollFile)
	if err != nil {
		return err
	}
	var ef EnrollFile
	if err := json.Unmarshal(data, &ef); err != nil {
		return fmt.Errorf("%s: %w", cfg.EnrollFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ef.CAPEM)) {
		return fmt.Errorf("%s: ca_pem is not a PEM certificate", cfg.EnrollFile)
	}
	conn, err := grpc.NewClient(cfg.Server, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})))
	if err != nil {
		return err
	}
	defer conn.Close()
	keyPEM, csrPEM, err := pki.NewCSR()
	if err != nil {
		return err
	}
	resp, err := nixmoxv1.NewAgentServiceClient(conn).Enroll(ctx, &nixmoxv1.EnrollRequest{Token: ef.Token, Service: cfg.Service, CsrPem: csrPEM})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{keyPath, keyPEM}, {caPath, resp.GetCaPem()}, {certPath, resp.GetCertificatePem()}} { // the certificate last: its presence means enrolled
		if err := writeFile(f.path, f.data); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// state is what the agent keeps across streams: a generation being applied
// outlives the stream it came on, so that after a server restart the new
// stream can confirm it.
type state struct {
	cfg Config
	log hclog.Logger
	sw  *Switcher

	mu              sync.Mutex
	send            func(*nixmoxv1.ConnectRequest) error // the current stream's, or nil
	active          int64                                // last confirmed generation
	applying        int64
	applyingHealthy bool
	rolledBack      bool          // the generation being applied was rolled back; its Apply is ending
	confirm         chan struct{} // closed when the server confirms applying
	stopMonitor     func()
	health          nixmoxv1.Health // the monitor's last result
	failedGen       int64           // the last generation that failed
	failure         string
	unconfirmedGen  int64                       // a healthy generation rolled back for want of the server's confirmation
	interruptedGen  int64                       // a generation rolled back at start because the agent had stopped in its middle
	activeSpec      *health.Spec                // the active generation's checks
	cancelApply     func(error)                 // stops the generation being applied
	next            *nixmoxv1.DesiredGeneration // a newer one, to apply after it
}

func newState(cfg Config, log hclog.Logger) *state {
	st := &state{cfg: cfg, log: log, stopMonitor: func() {}, cancelApply: func(error) {}}
	if data, err := os.ReadFile(filepath.Join(cfg.StateDir, "generation")); err == nil {
		st.active, _ = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	}
	st.sw = &Switcher{Profile: nix.Profile(cfg.Profile), Report: st.stage, StateDir: cfg.StateDir, CurrentSystem: cfg.CurrentSystem,
		Prober: health.Prober{Path: systemPath(cfg)},
		Activator: Activator{SystemdRun: cfg.SystemdRun, LogDir: cfg.StateDir, Env: []string{
			"NIXMOX_SERVICE=" + cfg.Service,
			"NIXMOX_STATE_DIR=" + cfg.StateDir,
			"NIXMOX_SECRETS_DIR=" + filepath.Join(cfg.StateDir, "secrets"),
		}}}
	st.sw.Unconfirmed = func(gen int64) {
		st.mu.Lock()
		st.unconfirmedGen = gen
		st.mu.Unlock()
	}
	return st
}

// systemPath is what health checks find first on their PATH: the service
// system's programs (curl, dig, pg_isready), not only the agent's.
func systemPath(cfg Config) string {
	if cfg.CurrentSystem != "" {
		return filepath.Join(cfg.CurrentSystem, "sw", "bin")
	}
	return ""
}

// emit sends on the current stream, if any; a report without a stream is
// dropped (the next hello carries the state).
func (st *state) emit(m *nixmoxv1.ConnectRequest) {
	st.mu.Lock()
	send := st.send
	st.mu.Unlock()
	if send == nil {
		return
	}
	if err := send(m); err != nil {
		st.log.Warn("reporting", "error", err)
	}
}

func (st *state) stage(g int64, s Stage, text string) {
	// Every stage in the agent's own log too: what happened on this
	// container is readable on it (journalctl -u nixmox-agent).
	if s == Failed {
		st.log.Warn("stage", "generation", g, "stage", s, "cause", text)
	} else {
		st.log.Info("stage", "generation", g, "stage", s)
	}
	// The state and the stream are read under one lock with the hello
	// (session): the stage is in the hello or reported on the stream.
	st.mu.Lock()
	if (s == Healthy || s == Failed) && st.applying == g {
		// A failed generation is no longer waiting for a confirmation, even
		// while it is being rolled back.
		st.applyingHealthy = s == Healthy
	}
	if s == RolledBack && st.applying == g {
		st.rolledBack = true // asked for again from now on, it is applied anew
	}
	unconfirmed := (s == Failed || s == RolledBack) && st.unconfirmedGen == g
	send := st.send
	st.mu.Unlock()
	if send == nil {
		return // the next hello carries the state
	}
	if err := send(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Stage{Stage: &nixmoxv1.StageReport{Generation: g, Stage: stageOf(s), Log: text, Unconfirmed: unconfirmed}}}); err != nil {
		st.log.Warn("reporting", "error", err)
	}
}

// desired starts applying a generation, unless it is the one already
// being applied (a server that restarted asks again).
func (st *state) desired(ctx context.Context, d *nixmoxv1.DesiredGeneration) {
	st.mu.Lock()
	if st.applying == d.GetGeneration() && st.applying != 0 {
		if st.rolledBack {
			// Its rollback is reported and ends now: the server asks for
			// it again (it was reverted for want of a confirmation).
			st.next = d
		}
		st.mu.Unlock()
		return
	}
	if st.applying != 0 {
		if d.GetGeneration() > st.applying {
			// The server moved on (it restarted and built anew): the
			// generation being applied will never be confirmed. Stop it —
			// it is rolled back — and apply the newer one next.
			st.log.Warn("a newer generation supersedes the one being applied", "applying", st.applying, "next", d.GetGeneration())
			st.next = d
			st.cancelApply(ErrSuperseded)
		} else {
			st.log.Warn("an older generation was asked for while applying; ignoring", "applying", st.applying, "asked", d.GetGeneration())
		}
		st.mu.Unlock()
		return
	}
	st.applying, st.applyingHealthy, st.rolledBack, st.confirm = d.GetGeneration(), false, false, make(chan struct{})
	confirm := st.confirm
	applyCtx, cancel := context.WithCancelCause(ctx)
	st.cancelApply = cancel
	// The running generation's monitor stops: during a switch its checks
	// say nothing (the switch reports its own), and a late result of it
	// must not land after the outcome. Monitoring resumes on whichever
	// generation the switch leaves active.
	st.stopMonitor()
	st.stopMonitor = func() {}
	st.mu.Unlock()
	spec := specOf(d.GetHealth())
	go st.outcome(ctx, d.GetGeneration(), spec, func() error {
		defer cancel(nil)
		return st.sw.Apply(applyCtx, Desired{
			Generation: d.GetGeneration(), StorePath: d.GetStorePath(), CacheURL: d.GetCacheUrl(),
			CachePublicKey: d.GetCachePublicKey(), ConfirmTimeout: d.GetConfirmTimeout().AsDuration(), Health: spec,
			NoRollback: d.GetNoRollback(),
		}, confirm)
	})
}

// outcome runs a switch (apply) and keeps what it ended with: the active
// generation and its monitor, or the failure the next hello reports; then
// the generation that superseded it, if any.
func (st *state) outcome(ctx context.Context, gen int64, spec health.Spec, apply func() error) {
	err := apply()
	if errors.Is(err, ErrShutdown) {
		st.log.Warn("stopping in the middle of a switch; the next start finishes it", "generation", gen)
		return
	}
	st.mu.Lock()
	st.applying, st.applyingHealthy, st.cancelApply = 0, false, func(error) {}
	next := st.next
	st.next = nil
	if err == nil {
		st.active = gen
	} else {
		st.failedGen, st.failure = gen, truncate(err.Error(), 4096)
	}
	st.mu.Unlock()
	if next != nil && ctx.Err() == nil {
		defer st.desired(ctx, next)
	}
	if err != nil {
		st.log.Error("generation not applied", "generation", gen, "error", err)
		st.mu.Lock()
		if errors.Is(err, ErrLeftInPlace) {
			// The failed generation is what runs now: its checks are
			// the ones to watch, so that its health is reported as
			// it is, not the replaced generation's.
			st.activeSpec = &spec
		}
		spec := st.activeSpec
		st.mu.Unlock()
		if spec != nil && next == nil {
			// Back on the active generation: check it afresh, so its
			// health is known now, not after the old monitor notices.
			st.monitor(ctx, *spec)
		}
		return
	}
	st.mu.Lock()
	st.activeSpec = &spec
	st.mu.Unlock()
	if next == nil {
		st.monitor(ctx, spec)
	}
}

// recover finishes a switch the agent stopped in the middle of, before
// the first stream: the server's first hello then tells the truth.
func (st *state) recover(ctx context.Context) {
	r := st.sw.Recover()
	switch {
	case r.Generation == 0:
		return
	case r.Confirmed:
		st.log.Info("finished a switch the server had confirmed before the agent stopped", "generation", r.Generation)
		st.active = r.Generation
	case r.Resume:
		st.log.Info("resuming a switch: checking the generation again and waiting for the server's confirmation", "generation", r.Generation)
		st.mu.Lock()
		st.applying, st.confirm = r.Generation, make(chan struct{})
		confirm := st.confirm
		applyCtx, cancel := context.WithCancelCause(ctx)
		st.cancelApply = cancel
		st.mu.Unlock()
		go st.outcome(ctx, r.Generation, r.rec.Health, func() error {
			defer cancel(nil)
			return st.sw.ResumeRecovered(applyCtx, r, confirm)
		})
	default:
		st.log.Warn("rolled back a switch the agent stopped in the middle of", "generation", r.Generation, "error", r.Err)
		if r.Generation > 0 {
			// Not unhealthy: unconfirmed, so the server hands it out again.
			st.failedGen, st.failure, st.unconfirmedGen, st.interruptedGen = r.Generation, truncate(r.Err.Error(), 4096), r.Generation, r.Generation
		}
	}
}

func (st *state) confirmed(gen int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.applying == gen && st.confirm != nil {
		close(st.confirm)
		st.confirm = nil
	}
}

// monitor watches the confirmed generation's liveness until the next one
// and reports transitions.
func (st *state) monitor(ctx context.Context, spec health.Spec) {
	st.mu.Lock()
	st.stopMonitor()
	mctx, cancel := context.WithCancel(ctx)
	st.stopMonitor = cancel
	st.mu.Unlock()
	go Monitor(mctx, spec, health.Prober{}, nil, func(tr Transition) {
		h := nixmoxv1.Health_HEALTH_UNHEALTHY
		if tr.Healthy {
			h = nixmoxv1.Health_HEALTH_HEALTHY
		}
		st.mu.Lock()
		st.health = h
		st.mu.Unlock()
		st.emit(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Health{Health: &nixmoxv1.HealthReport{
			Check: "liveness", Health: h, Output: truncate(tr.Output, 1024), Latency: durationpb.New(tr.Latency)}}})
	}, func(ok bool, latency time.Duration) {
		h := nixmoxv1.Health_HEALTH_UNHEALTHY
		if ok {
			h = nixmoxv1.Health_HEALTH_HEALTHY
		}
		st.emit(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Health{Health: &nixmoxv1.HealthReport{
			Check: "liveness", Health: h, Latency: durationpb.New(latency), Sample: true}}})
	})
}

// session is one stream: hello with the agent's state, then desired
// generations and confirmations, until the stream breaks.
func session(ctx context.Context, cfg Config, creds credentials.TransportCredentials, st *state) (connected bool, err error) {
	start := time.Now()
	conn, err := grpc.NewClient(cfg.Server, grpc.WithTransportCredentials(creds))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := nixmoxv1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	var sendMu sync.Mutex
	send := func(m *nixmoxv1.ConnectRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	// The hello and the stream's taking over of reports happen under one
	// lock: a stage reached meanwhile is either in the hello or reported
	// after it, never lost between the two.
	st.mu.Lock()
	hello := &nixmoxv1.Hello{ActiveGeneration: st.active, Applying: st.applying, ApplyingHealthy: st.applyingHealthy, AgentVersion: Version, Health: st.health,
		FailedGeneration: st.failedGen, Failure: st.failure, FailureUnconfirmed: st.failedGen != 0 && st.failedGen == st.unconfirmedGen,
		FailureInterrupted: st.failedGen != 0 && st.failedGen == st.interruptedGen}
	if err := send(&nixmoxv1.ConnectRequest{Message: &nixmoxv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		st.mu.Unlock()
		return false, err
	}
	st.send = send
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.send = nil
		st.mu.Unlock()
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			// Established if the server spoke, or the stream lasted.
			return connected || time.Since(start) > 10*time.Second, err
		}
		connected = true
		switch m := msg.GetMessage().(type) {
		case *nixmoxv1.ConnectResponse_Desired:
			// Applying outlives the stream: it runs under the agent's
			// context, not the session's.
			st.desired(ctx, m.Desired)
		case *nixmoxv1.ConnectResponse_Confirm:
			st.confirmed(m.Confirm.GetGeneration())
		case *nixmoxv1.ConnectResponse_Secrets:
			// Values are never logged. They come before the generation
			// that needs them, on the same stream.
			if err := writeSecrets(filepath.Join(cfg.StateDir, "secrets"), m.Secrets.GetValues()); err != nil {
				st.log.Error("writing secrets", "error", err)
			} else {
				st.log.Info("secrets received", "count", len(m.Secrets.GetValues()))
			}
		}
	}
}

// specOf turns the wire's health spec into checks, with the manifest's
// defaults for what is unset.
func specOf(h *nixmoxv1.HealthSpec) health.Spec {
	s := health.Spec{Startup: h.GetStartup(), Liveness: h.GetLiveness(), Readiness: h.GetReadiness(),
		Interval: h.GetInterval().AsDuration(), Timeout: h.GetTimeout().AsDuration(), Retries: int(h.GetRetries()),
		StartPeriod: h.GetStartPeriod().AsDuration()}
	if s.Interval <= 0 {
		s.Interval = 30 * time.Second
	}
	if s.Timeout <= 0 {
		s.Timeout = time.Minute
	}
	return s
}

func stageOf(s Stage) nixmoxv1.Stage {
	switch s {
	case Pulled:
		return nixmoxv1.Stage_STAGE_PULLED
	case Switched:
		return nixmoxv1.Stage_STAGE_SWITCHED
	case Healthy:
		return nixmoxv1.Stage_STAGE_HEALTHY
	case Confirmed:
		return nixmoxv1.Stage_STAGE_CONFIRMED
	case Failed:
		return nixmoxv1.Stage_STAGE_FAILED
	case RolledBack:
		return nixmoxv1.Stage_STAGE_ROLLED_BACK
	}
	return nixmoxv1.Stage_STAGE_UNSPECIFIED
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
