package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/rollout"
)

// Metrics are nixmox-server's Prometheus metrics. The per-service gauges
// are read at scrape time from the same place as `nixmox-cli status`, so
// the two always agree; counters and histograms count what happened since
// the server started.
type Metrics struct {
	Registry *prometheus.Registry

	rollouts        *prometheus.CounterVec
	rolloutDuration prometheus.Histogram
	steps           *prometheus.CounterVec
	stepDuration    *prometheus.HistogramVec
	checkDuration   *prometheus.HistogramVec
	enrollRefusals  *prometheus.CounterVec

	mu      sync.Mutex
	started map[string]time.Time // step -> when it started running
}

// NewMetrics registers the metrics; status is what `nixmox-cli status`
// shows, and running reports whether a rollout holds the lock.
func NewMetrics(status func(context.Context) ([]*nixmoxv1.ServiceStatus, error), running func() bool) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixmox_rollouts_total", Help: "Rollouts finished since the server started, by result (ok, failed).",
		}, []string{"result"}),
		rolloutDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixmox_rollout_duration_seconds", Help: "How long finished rollouts took.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixmox_steps_total", Help: "Steps that ended since the server started, by phase and state (succeeded, failed, unchanged, held).",
		}, []string{"phase", "state"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixmox_step_duration_seconds", Help: "How long steps that ran took, by phase.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 12),
		}, []string{"phase"}),
		checkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixmox_health_check_duration_seconds", Help: "Latency of the health checks agents run, by service and check.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"service", "check"}),
		enrollRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixmox_enroll_refused_total", Help: "Enrollment attempts refused since the server started, by reason (invalid, rate, token).",
		}, []string{"reason"}),
		started: map[string]time.Time{},
	}
	m.Registry.MustRegister(m.rollouts, m.rolloutDuration, m.steps, m.stepDuration, m.checkDuration, m.enrollRefusals,
		&serviceCollector{status: status, running: running},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Present from the start, at 0: an increase() over the first rollout
	// then counts it.
	for _, r := range []string{"ok", "failed"} {
		m.rollouts.WithLabelValues(r)
	}
	for _, r := range []string{"invalid", "rate", "token"} {
		m.enrollRefusals.WithLabelValues(r)
	}
	for _, phase := range []plan.Phase{plan.TFInfra, plan.NixCore, plan.TFAuthCore, plan.TFServiceInfra, plan.NixServiceConfig, plan.TFServiceConfig, plan.Verify, "rollback"} {
		m.stepDuration.WithLabelValues(string(phase))
		for _, state := range []string{"succeeded", "failed", "unchanged", "held"} {
			m.steps.WithLabelValues(string(phase), state)
		}
	}
	return m
}

// phaseOf is a step's phase: "verify" of "verify:dns".
func phaseOf(step string) string {
	if i := strings.LastIndexByte(step, ':'); i > 0 && strings.Count(step, ":") >= 1 {
		if p := step[:i]; strings.HasPrefix(p, "tf:") || strings.HasPrefix(p, "nix:") || p == "verify" || p == "rollback" {
			return p
		}
	}
	return step // tf:infra, tf:auth-core
}

// stepEvent counts a step's transition.
func (m *Metrics) stepEvent(step string, st rollout.State, at time.Time) {
	if m == nil {
		return
	}
	phase := phaseOf(step)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch st {
	case rollout.Running:
		m.started[step] = at
		return
	case rollout.Pending:
		return
	}
	if t, ok := m.started[step]; ok {
		m.stepDuration.WithLabelValues(phase).Observe(at.Sub(t).Seconds())
		delete(m.started, step)
	}
	m.steps.WithLabelValues(phase, api.StepWord(stateOf(st))).Inc()
}

// enrollRefused counts a refused enrollment attempt.
func (m *Metrics) enrollRefused(reason string) {
	if m != nil {
		m.enrollRefusals.WithLabelValues(reason).Inc()
	}
}

// rolloutDone counts a finished rollout.
func (m *Metrics) rolloutDone(ok bool, took time.Duration) {
	if m == nil {
		return
	}
	result := "failed"
	if ok {
		result = "ok"
	}
	m.rollouts.WithLabelValues(result).Inc()
	m.rolloutDuration.Observe(took.Seconds())
}

// checkSample records one health check's latency.
func (m *Metrics) checkSample(service, check string, took time.Duration) {
	if m == nil {
		return
	}
	m.checkDuration.WithLabelValues(service, check).Observe(took.Seconds())
}

// serviceCollector reads the per-service gauges at scrape time.
type serviceCollector struct {
	status  func(context.Context) ([]*nixmoxv1.ServiceStatus, error)
	running func() bool
}

var (
	descUp        = prometheus.NewDesc("nixmox_service_up", "1 when the service's agent is connected and reports it healthy, else 0.", []string{"service"}, nil)
	descHealth    = prometheus.NewDesc("nixmox_service_health", "The service's health as its agent reports it: 1 for the current state (healthy, unhealthy, starting, unknown), 0 for the others.", []string{"service", "health"}, nil)
	descConnected = prometheus.NewDesc("nixmox_agent_connected", "1 while the service's agent holds its stream to the server.", []string{"service"}, nil)
	descActive    = prometheus.NewDesc("nixmox_service_active_generation", "The generation the service runs, as its agent confirmed.", []string{"service"}, nil)
	descDesired   = prometheus.NewDesc("nixmox_service_desired_generation", "The newest generation the server handed to the service.", []string{"service"}, nil)
	descReport    = prometheus.NewDesc("nixmox_service_last_report_timestamp_seconds", "When the service's agent last reported its health.", []string{"service"}, nil)
	descRunning   = prometheus.NewDesc("nixmox_rollout_running", "1 while a rollout runs.", nil, nil)
	descScrapeErr = prometheus.NewDesc("nixmox_status_error", "1 when the server could not read its state for this scrape.", nil, nil)
	healthStates  = []string{"healthy", "unhealthy", "starting", "unknown"}
)

func (c *serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descHealth, descConnected, descActive, descDesired, descReport, descRunning, descScrapeErr} {
		ch <- d
	}
}

func (c *serviceCollector) Collect(ch chan<- prometheus.Metric) {
	running := 0.0
	if c.running() {
		running = 1
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, running)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	services, err := c.status(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 0)
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, s := range services {
		name := s.GetName()
		health := api.HealthWord(s.GetHealth())
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b(s.GetAgentConnected() && health == "healthy"), name)
		for _, h := range healthStates {
			ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, b(h == health), name, h)
		}
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, b(s.GetAgentConnected()), name)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.GetGeneration()), name)
		ch <- prometheus.MustNewConstMetric(descDesired, prometheus.GaugeValue, float64(s.GetDesiredGeneration()), name)
		if t := s.GetLastReport(); t != nil {
			ch <- prometheus.MustNewConstMetric(descReport, prometheus.GaugeValue, float64(t.AsTime().UnixNano())/1e9, name)
		}
	}
}
