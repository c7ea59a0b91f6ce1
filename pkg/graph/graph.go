// Package graph is the dependency graph of a manifest's enabled services:
// the explicit depends_on edges plus the implicit ones the manifest package
// resolves (auth provider, database host, forward_auth upstream, reverse
// proxy). It finds cycles, orders the services in layers and finds the
// critical path.
package graph

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// Graph is the dependency graph of a manifest's enabled services. Edges run
// from a service to the services it needs.
type Graph struct {
	m     *manifest.Manifest
	names []string // enabled service names, sorted
	index map[string]int
	deps  [][]int // deps[i]: what service i needs, sorted by name
	layer []int   // longest chain of needs below a service; -1 in a cycle
	order []int   // topological order: by layer, then name
}

// New builds the graph of m. It returns the graph even when m is invalid,
// together with a *manifest.ValidationError for what only the graph can find:
// dependency cycles and deployment_phases that contradict the dependencies.
// Services in a cycle are left out of Order and Layers.
func New(m *manifest.Manifest) (*Graph, error) {
	enabled := m.Enabled()
	g := &Graph{m: m, index: make(map[string]int, len(enabled))}
	for _, s := range enabled {
		if _, dup := g.index[s.Name]; dup {
			continue // the same name in both sections: reported by validation
		}
		g.index[s.Name] = len(g.names)
		g.names = append(g.names, s.Name)
	}
	g.deps = make([][]int, len(g.names))
	total := 0
	for _, s := range enabled {
		total += len(s.Dependencies())
	}
	all := make([]int, 0, total) // every deps list, one allocation
	for _, s := range enabled {
		i := g.index[s.Name]
		if g.names[i] != s.Name || g.deps[i] != nil {
			continue
		}
		start := len(all)
		for _, d := range s.Dependencies() {
			if j, ok := g.index[d.Service]; ok && j != i {
				all = append(all, j)
			}
		}
		g.deps[i] = all[start:len(all):len(all)]
	}
	var diags manifest.Diagnostics
	g.sort()
	g.cycles(&diags)
	g.phases(&diags)
	return g, diags.Err(m.File)
}

// sort computes layers and the topological order with Kahn's algorithm;
// nodes on or behind a cycle keep layer -1.
func (g *Graph) sort() {
	n := len(g.names)
	g.layer = make([]int, n)
	pending := make([]int, n)
	// users[d]: the services that need d, laid out in one allocation.
	count := make([]int, n)
	total := 0
	for i, ds := range g.deps {
		pending[i] = len(ds)
		total += len(ds)
		for _, d := range ds {
			count[d]++
		}
	}
	users := make([][]int, n)
	all := make([]int, total)
	for d, c := range count {
		users[d], all = all[:0:c], all[c:]
	}
	for i, ds := range g.deps {
		for _, d := range ds {
			users[d] = append(users[d], i)
		}
	}
	g.order = make([]int, 0, n)
	ready := make([]int, 0, n)
	for i := range g.names {
		g.layer[i] = -1
		if pending[i] == 0 {
			ready = append(ready, i)
			g.layer[i] = 0
		}
	}
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		g.order = append(g.order, i)
		for _, u := range users[i] {
			g.layer[u] = max(g.layer[u], g.layer[i]+1)
			if pending[u]--; pending[u] == 0 {
				ready = append(ready, u)
			}
		}
	}
	slices.SortFunc(g.order, func(a, b int) int { // indices are unique: a total order
		if c := cmp.Compare(g.layer[a], g.layer[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
}

// cycles reports each strongly connected component with more than one
// service as one cycle, printed from its alphabetically first service.
func (g *Graph) cycles(diags *manifest.Diagnostics) {
	if len(g.order) == len(g.names) {
		return
	}
	for _, comp := range g.sccs() {
		if len(comp) < 2 {
			continue
		}
		in := map[int]bool{}
		start := comp[0]
		for _, c := range comp {
			in[c] = true
			start = min(start, c)
		}
		cycle := g.shortestCycle(start, in)
		names := make([]string, len(cycle))
		for i, c := range cycle {
			names[i] = g.names[c]
		}
		s := g.m.Service(g.names[start])
		p := s.Path().Key("depends_on")
		for _, d := range s.Dependencies() {
			if d.Service == names[1] {
				p = d.Location()
			}
		}
		diags.Addf(p, "dependency cycle: %s", strings.Join(names, " → "))
	}
}

// shortestCycle returns start, ..., start through the nodes in comp by
// breadth-first search, so the printed cycle is as short as it can be.
func (g *Graph) shortestCycle(start int, comp map[int]bool) []int {
	prev := map[int]int{start: -1}
	queue := []int{start}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, d := range g.deps[u] {
			if d == start {
				var path []int
				for x := u; x != -1; x = prev[x] {
					path = append(path, x)
				}
				for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
					path[i], path[j] = path[j], path[i]
				}
				return append(path, start)
			}
			if _, seen := prev[d]; !seen && comp[d] {
				prev[d] = u
				queue = append(queue, d)
			}
		}
	}
	return []int{start, start}
}

// sccs returns the strongly connected components (Tarjan's algorithm,
// iterative so that deep graphs cannot exhaust the stack).
func (g *Graph) sccs() [][]int {
	n := len(g.names)
	index, low := make([]int, n), make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack, out [][]int
	var sccStack []int
	next := 0
	for root := 0; root < n; root++ {
		if index[root] != -1 {
			continue
		}
		stack = append(stack[:0], []int{root, 0})
		index[root], low[root] = next, next
		next++
		sccStack = append(sccStack, root)
		onStack[root] = true
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			v, ei := top[0], top[1]
			if ei < len(g.deps[v]) {
				top[1]++
				w := g.deps[v][ei]
				if index[w] == -1 {
					index[w], low[w] = next, next
					next++
					sccStack = append(sccStack, w)
					onStack[w] = true
					stack = append(stack, []int{w, 0})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				parent := stack[len(stack)-1][0]
				low[parent] = min(low[parent], low[v])
			}
			if low[v] == index[v] {
				var comp []int
				for {
					w := sccStack[len(sccStack)-1]
					sccStack = sccStack[:len(sccStack)-1]
					onStack[w] = false
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				out = append(out, comp)
			}
		}
	}
	return out[:len(out):len(out)]
}

// phases reports a deployment_phases list that names a service before one
// it (transitively) needs.
func (g *Graph) phases(diags *manifest.Diagnostics) {
	dp := g.m.DeploymentPhases
	if dp == nil {
		return
	}
	for _, list := range []struct {
		name  string
		names []string
	}{{"nix_core", dp.NixCore}, {"services", dp.Services}} {
		pos := map[int]int{}
		for i, name := range list.names {
			if j, ok := g.index[name]; ok {
				if _, dup := pos[j]; !dup {
					pos[j] = i
				}
			}
		}
		// latest[x]: the service listed last among those x needs,
		// directly or through services in other lists; -1 for none.
		latest := make([]int, len(g.names))
		for x := range latest {
			latest[x] = -1
		}
		for _, x := range g.order {
			for _, d := range g.deps[x] {
				if p, ok := pos[d]; ok && (latest[x] == -1 || p > pos[latest[x]]) {
					latest[x] = d
				}
				if l := latest[d]; l != -1 && (latest[x] == -1 || pos[l] > pos[latest[x]]) {
					latest[x] = l
				}
			}
		}
		for x, p := range pos {
			if l := latest[x]; l != -1 && pos[l] > p {
				diags.Addf(manifest.Path{"deployment_phases", list.name}.Index(p),
					"%q is listed before %q, which it depends on", g.names[x], g.names[l])
			}
		}
	}
}

// Manifest returns the manifest the graph was built from.
func (g *Graph) Manifest() *manifest.Manifest { return g.m }

// Services returns every enabled service's name, sorted.
func (g *Graph) Services() []string { return g.names }

// Has reports whether name is an enabled service.
func (g *Graph) Has(name string) bool {
	_, ok := g.index[name]
	return ok
}

// Len is the number of services in the graph; their IDs are 0 to Len()-1.
func (g *Graph) Len() int { return len(g.names) }

// ID returns the service's number in the graph, for callers that keep
// per-service data in slices rather than maps keyed by name.
func (g *Graph) ID(name string) (int, bool) {
	i, ok := g.index[name]
	return i, ok
}

// NeedIDs is Needs by ID. The slice is the graph's own: do not modify it.
func (g *Graph) NeedIDs(id int) []int { return g.deps[id] }

// Needs returns the names of the services name directly needs, sorted.
func (g *Graph) Needs(name string) []string {
	i, ok := g.index[name]
	if !ok {
		return nil
	}
	out := make([]string, len(g.deps[i]))
	for k, d := range g.deps[i] {
		out[k] = g.names[d]
	}
	return out
}

// Order returns the services in dependency order: every service after all
// it needs; within a layer, by name.
func (g *Graph) Order() []string {
	out := make([]string, len(g.order))
	for k, i := range g.order {
		out[k] = g.names[i]
	}
	return out
}

// Layers groups the services by the length of the longest chain of needs
// below them: layer 0 needs nothing, layer 1 needs only layer 0, and so on.
// Services on a cycle are left out.
func (g *Graph) Layers() [][]string {
	var out [][]string
	for _, i := range g.order {
		l := g.layer[i]
		for len(out) <= l {
			out = append(out, nil)
		}
		out[l] = append(out[l], g.names[i])
	}
	return out
}

// CriticalPath returns the longest chain of services, each needing the one
// before it; among equally long chains, the alphabetically first.
func (g *Graph) CriticalPath() []string {
	best := -1
	for _, i := range g.order {
		if best == -1 || g.layer[i] > g.layer[best] {
			best = i
		}
	}
	if best == -1 {
		return nil
	}
	path := []string{g.names[best]}
	for x := best; g.layer[x] > 0; {
		for _, d := range g.deps[x] {
			if g.layer[d] == g.layer[x]-1 {
				x = d
				break
			}
		}
		path = append(path, g.names[x])
	}
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	return path
}

// Closure returns the given services and everything they transitively
// need, in dependency order.
func (g *Graph) Closure(names ...string) []string {
	keep := make([]bool, len(g.names))
	var stack []int
	for _, n := range names {
		if i, ok := g.index[n]; ok && !keep[i] {
			keep[i] = true
			stack = append(stack, i)
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, d := range g.deps[i] {
			if !keep[d] {
				keep[d] = true
				stack = append(stack, d)
			}
		}
	}
	var out []string
	for _, i := range g.order {
		if keep[i] {
			out = append(out, g.names[i])
		}
	}
	return out
}
