// Package plan turns the dependency graph into the rollout's steps, in the
// seed's phases:
//
//  1. tf:infra — containers and infrastructure for every enabled service;
//  2. nix:core:<s>, verify:<s> — each core service, in dependency order;
//  3. tf:auth-core — the auth provider's applications, providers, outposts;
//  4. per application service: tf:service-infra:<s>, nix:service-config:<s>,
//     tf:service-config:<s>, verify:<s> (steps with nothing to do left out).
//
// A step needs exactly the steps whose results it uses, never a whole phase,
// so that independent services can be deployed in parallel.
package plan

import (
	"container/heap"
	"fmt"
	"slices"
	"sort"

	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// Phase is the kind of a step.
type Phase string

// The phases, in the seed's order.
const (
	TFInfra          Phase = "tf:infra"
	NixCore          Phase = "nix:core"
	TFAuthCore       Phase = "tf:auth-core"
	TFServiceInfra   Phase = "tf:service-infra"
	NixServiceConfig Phase = "nix:service-config"
	TFServiceConfig  Phase = "tf:service-config"
	Verify           Phase = "verify"
)

// Step is one unit of work of a rollout.
type Step struct {
	// ID is unique in the plan: the phase, then ":" and the service for
	// per-service steps (nix:core:dns, verify:dns); the phase alone for
	// global ones (tf:infra, tf:auth-core).
	ID string `json:"id"`
	// Phase is the kind of work.
	Phase Phase `json:"phase"`
	// Service is the service the step deploys; "" for global steps.
	Service string `json:"service"`
	// Needs are the IDs of the steps that must succeed first, sorted.
	Needs []string `json:"needs"`
}

// Plan is the ordered list of steps of a rollout. It is the JSON contract
// of `nixmox-cli plan --format json`: every step is listed after all the
// steps it needs.
type Plan struct {
	// Services are the services the plan deploys, in dependency order.
	Services []string `json:"services"`
	// Steps are in an order that respects Needs.
	Steps []Step `json:"steps"`

	core map[string]bool
}

// Options select part of a plan.
type Options struct {
	// Services, if not empty, keeps only these services and everything
	// they need.
	Services []string
}

// SelectionError is a --service that names no enabled service.
type SelectionError struct{ Message string }

func (e *SelectionError) Error() string { return e.Message }

// New computes the plan for g. g must come from a valid manifest.
func New(g *graph.Graph, opts Options) (*Plan, error) {
	m := g.Manifest()
	services := g.Order()
	if len(opts.Services) > 0 {
		for _, s := range opts.Services {
			if !g.Has(s) {
				return nil, selectionError(m, g, s)
			}
		}
		services = g.Closure(opts.Services...)
	}

	p := &Plan{Services: services, core: make(map[string]bool)}
	// Per planned service, looked up once: its graph ID and its manifest
	// entry. Steps refer to each other by index, services by graph ID.
	ids := make([]int, len(services))
	svcs := make([]*manifest.Service, len(services))
	for k, name := range services {
		ids[k], _ = g.ID(name)
		svcs[k] = m.Service(name)
	}
	b := &builder{
		verify: make([]int, g.Len()),
		steps:  make([]Step, 0, 2+4*len(services)),
		needs:  make([][]int, 0, 2+4*len(services)),
	}
	for i := range b.verify {
		b.verify[i] = -1 // not planned (yet)
	}

	infra := b.add(TFInfra, "")
	providers := authProviders(m, svcs)

	// Phase 2: core services, each after the core services it needs. A core
	// service that uses an auth provider (and is not one) needs phase 3
	// first, and so does every core service that needs it: those come after
	// tf:auth-core, so that the steps stay in construction order.
	late := make([]bool, g.Len())
	core := func(lateOnes bool, authCore int) {
		for k, s := range svcs {
			if !s.Core || late[ids[k]] != lateOnes {
				continue
			}
			p.core[s.Name] = true
			needs := b.base(infra, g.NeedIDs(ids[k]))
			if authCore >= 0 && usesAuth(s) && !slices.Contains(providers, s.Name) {
				needs = append(needs, authCore)
			}
			b.verify[ids[k]] = b.add(Verify, s.Name, b.add(NixCore, s.Name, needs...))
		}
	}
	if len(providers) > 0 {
		for k, s := range svcs {
			if !s.Core {
				continue
			}
			id := ids[k]
			late[id] = usesAuth(s) && !slices.Contains(providers, s.Name)
			for _, d := range g.NeedIDs(id) {
				late[id] = late[id] || late[d]
			}
		}
	}
	core(false, -1)

	// Phase 3: the auth providers' Terraform, once the providers are up.
	authCore := -1
	if len(providers) > 0 {
		providerIDs := make([]int, len(providers))
		for k, name := range providers {
			var ok bool
			if providerIDs[k], ok = g.ID(name); !ok {
				return nil, fmt.Errorf("internal error: auth provider %s is not in the dependency graph", name)
			}
		}
		authCore = b.add(TFAuthCore, "", b.base(-1, providerIDs)...)
	}
	core(true, authCore)

	// Phase 4: application services.
	for k, s := range svcs {
		if s.Core {
			continue
		}
		name := s.Name
		base := b.base(infra, g.NeedIDs(ids[k]))
		if authCore >= 0 && usesAuth(s) {
			base = append(base, authCore)
		}
		configNeeds := base
		if tf := s.Interface.Terraform; tf != nil && len(tf.Modules) > 0 {
			configNeeds = append(base[:len(base):len(base)], b.add(TFServiceInfra, name, base...))
		}
		last := b.add(NixServiceConfig, name, configNeeds...)
		if tf := s.Interface.Terraform; tf != nil && len(tf.ConfigModules) > 0 {
			last = b.add(TFServiceConfig, name, last)
		}
		b.verify[ids[k]] = b.add(Verify, name, last)
	}

	var err error
	if p.Steps, err = b.finish(); err != nil {
		return nil, err
	}
	return p, nil
}

// builder collects steps with their needs as indices, so that ordering
// them needs no lookups by ID.
type builder struct {
	steps  []Step
	needs  [][]int
	verify []int // by graph ID: the index of the service's verify step, or -1
}

func (b *builder) add(phase Phase, service string, needs ...int) int {
	id := string(phase)
	if service != "" {
		id += ":" + service
	}
	b.steps = append(b.steps, Step{ID: id, Phase: phase, Service: service})
	b.needs = append(b.needs, needs)
	return len(b.steps) - 1
}

// base is the infra step (unless -1) and the verify step of each service
// (by graph ID). A service without a verify step yet (only possible for an
// invalid graph) maps to -1, a need that finish reports.
func (b *builder) base(infra int, services []int) []int {
	out := make([]int, 0, len(services)+2)
	if infra >= 0 {
		out = append(out, infra)
	}
	for _, id := range services {
		out = append(out, b.verify[id])
	}
	return out
}

// finish orders the steps so that each comes after all it needs, keeping
// the construction order wherever the needs allow (Kahn's algorithm with
// the construction index as priority), and fills in Needs as sorted IDs.
func (b *builder) finish() ([]Step, error) {
	order := make([]int, 0, len(b.steps))
	inOrder := true
	for i, ns := range b.needs {
		for _, n := range ns {
			if n < 0 {
				return nil, fmt.Errorf("internal error: step %s needs a service the plan does not deploy", b.steps[i].ID)
			}
			inOrder = inOrder && n < i
		}
	}
	if inOrder {
		for i := range b.steps {
			order = append(order, i)
		}
	} else {
		order = kahn(b.needs)
		if len(order) != len(b.steps) {
			// Validation rejects every manifest that could get here;
			// this guards the contract rather than trusting it.
			return nil, fmt.Errorf("internal error: the plan's steps form a cycle (%d of %d ordered)", len(order), len(b.steps))
		}
	}
	total := 0
	for _, ns := range b.needs {
		total += len(ns)
	}
	all := make([]string, 0, total) // one allocation for every Needs list
	out := make([]Step, len(order))
	for k, i := range order {
		s := b.steps[i]
		start := len(all)
		for _, n := range b.needs[i] {
			all = append(all, b.steps[n].ID)
		}
		s.Needs = all[start:len(all):len(all)]
		sort.Strings(s.Needs)
		out[k] = s
	}
	return out, nil
}

// kahn returns the indices in topological order, smallest index first
// among the ready ones; fewer than all of them when there is a cycle.
func kahn(needs [][]int) []int {
	pending := make([]int, len(needs))
	users := make([][]int, len(needs))
	for i, ns := range needs {
		pending[i] = len(ns)
		for _, n := range ns {
			users[n] = append(users[n], i)
		}
	}
	ready := &intHeap{}
	for i := range needs {
		if pending[i] == 0 {
			heap.Push(ready, i)
		}
	}
	var order []int
	for ready.Len() > 0 {
		i := heap.Pop(ready).(int)
		order = append(order, i)
		for _, u := range users[i] {
			if pending[u]--; pending[u] == 0 {
				heap.Push(ready, u)
			}
		}
	}
	return order
}

// usesAuth reports whether the service needs an auth provider's resources.
func usesAuth(s *manifest.Service) bool {
	for _, d := range s.Dependencies() {
		if d.Has("auth provider") {
			return true
		}
	}
	return false
}

// authProviders returns the providers that the selected services use, and
// the default provider when Authentik outposts are asked for.
func authProviders(m *manifest.Manifest, services []*manifest.Service) []string {
	set := map[string]bool{}
	for _, s := range services {
		for _, d := range s.Dependencies() {
			if d.Has("auth provider") {
				set[d.Service] = true
			}
		}
	}
	o := m.Network.Outposts
	if o.LDAP != nil || o.RADIUS != nil {
		if s := m.Service(manifest.DefaultAuthProvider()); s != nil && slices.Contains(services, s) {
			set[s.Name] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func selectionError(m *manifest.Manifest, g *graph.Graph, name string) error {
	for _, sec := range []map[string]*manifest.Service{m.CoreServices, m.Services} {
		if s, ok := sec[name]; ok && s != nil && !s.Enable {
			return &SelectionError{fmt.Sprintf("service %q is disabled", name)}
		}
	}
	msg := fmt.Sprintf("unknown service %q", name)
	if best := manifest.Closest(name, g.Services()); best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return &SelectionError{msg}
}

type intHeap []int

func (h intHeap) Len() int           { return len(h) }
func (h intHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h intHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *intHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *intHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Group is the seed phase (1-4) a step is shown under.
func (p *Plan) Group(s Step) int {
	switch {
	case s.Phase == TFInfra:
		return 1
	case s.Phase == NixCore, s.Phase == Verify && p.core[s.Service]:
		return 2
	case s.Phase == TFAuthCore:
		return 3
	}
	return 4
}

// CriticalPath returns the longest chain of steps, each needing the one
// before it.
func (p *Plan) CriticalPath() []string {
	depth := make(map[string]int, len(p.Steps))
	from := make(map[string]string, len(p.Steps))
	best := ""
	for _, s := range p.Steps {
		depth[s.ID] = 1
		for _, n := range s.Needs {
			if depth[n]+1 > depth[s.ID] {
				depth[s.ID], from[s.ID] = depth[n]+1, n
			}
		}
		if best == "" || depth[s.ID] > depth[best] {
			best = s.ID
		}
	}
	var path []string
	for id := best; id != ""; id = from[id] {
		path = append(path, id)
	}
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	return path
}
