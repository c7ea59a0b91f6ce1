package server

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/server/rollout"
	"github.com/nixmox/nixmox/server/store"
)

//go:embed web
var webFS embed.FS

var pages = template.Must(template.ParseFS(webFS, "web/*.html"))

// StatusPage is the server's read-only HTTP face: the status page (/),
// a rollout's steps (/rollouts/ID), its assets, and /metrics. Pages are
// rendered on the server from the same state as `nixmox-cli status`; no
// JavaScript, no secret (outputs are never shown).
type StatusPage struct {
	Control *ControlAPI
	Store   *store.Store
	Metrics *Metrics
	// Scraped, if set, is called after every /metrics request.
	Scraped func()
}

// Handler serves the pages and /metrics.
func (p *StatusPage) Handler() http.Handler {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /rollouts/{id}", p.rollout)
	metrics := promhttp.HandlerFor(p.Metrics.Registry, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		metrics.ServeHTTP(w, r)
		if p.Scraped != nil {
			p.Scraped()
		}
	})
	return mux
}

type pageService struct {
	Name, Health, LastResult, LastReport string
	Connected                            bool
	Generation, Desired                  int64
}

type pageRollout struct {
	ID, Result, Started, Took, Who, Summary, Manifest string
}

type pageStep struct {
	ID, State, Started, Took, Error string
	Attempts                        int
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func took(from, to time.Time) string {
	if from.IsZero() || to.IsZero() {
		return "–"
	}
	return to.Sub(from).Round(10 * time.Millisecond).String()
}

func rolloutRow(r store.Rollout, manifestFile string) pageRollout {
	result := "failed"
	switch {
	case r.Finished.IsZero():
		result = "running"
	case r.OK:
		result = "ok"
	}
	return pageRollout{ID: r.ID, Result: result, Started: stamp(r.Started), Took: took(r.Started, r.Finished),
		Who: r.Who, Summary: r.Summary, Manifest: manifestFile}
}

func (p *StatusPage) render(w http.ResponseWriter, name string, data map[string]any) {
	data["Now"] = stamp(time.Now())
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'none'")
	_, _ = w.Write(buf.Bytes())
}

func (p *StatusPage) index(w http.ResponseWriter, r *http.Request) {
	st, err := p.Control.Status(r.Context(), &nixmoxv1.StatusRequest{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var services []pageService
	for _, s := range st.GetServices() {
		ps := pageService{Name: s.GetName(), Health: api.HealthWord(s.GetHealth()), Connected: s.GetAgentConnected(),
			Generation: s.GetGeneration(), Desired: s.GetDesiredGeneration(), LastResult: "–", LastReport: "–"}
		if lr := s.GetLastResult(); lr != nixmoxv1.StepState_STEP_STATE_UNSPECIFIED {
			ps.LastResult = api.StepWord(lr)
		}
		if t := s.GetLastReport(); t != nil {
			ps.LastReport = stamp(t.AsTime())
		}
		services = append(services, ps)
	}
	rs, err := p.Store.Rollouts(20)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var rollouts []pageRollout
	for _, r := range rs {
		rollouts = append(rollouts, rolloutRow(r, ""))
	}
	p.render(w, "index.html", map[string]any{"Title": "Status", "Services": services, "Rollouts": rollouts})
}

func (p *StatusPage) rollout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ro, err := p.Store.Rollout(id)
	if err != nil {
		http.Error(w, "no rollout "+id, http.StatusNotFound)
		return
	}
	file := ""
	if m, err := p.Store.Manifest(ro.Manifest); err == nil {
		file = m.File
	}
	recs, err := p.Store.Steps(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	order := slices.SortedFunc(maps.Values(recs), func(a, b store.StepRecord) int {
		switch {
		case a.Started.IsZero() != b.Started.IsZero():
			if a.Started.IsZero() {
				return 1 // never started: last
			}
			return -1
		case !a.Started.Equal(b.Started):
			return a.Started.Compare(b.Started)
		}
		return strings.Compare(a.ID, b.ID)
	})
	var steps []pageStep
	for _, s := range order {
		steps = append(steps, pageStep{ID: s.ID, State: api.StepWord(stateOf(rollout.State(s.State))), Attempts: s.Attempts,
			Started: stamp(s.Started), Took: took(s.Started, s.Finished), Error: s.Error})
	}
	p.render(w, "rollout.html", map[string]any{"Title": "Rollout " + id, "Rollout": rolloutRow(ro, file), "Steps": steps})
}
