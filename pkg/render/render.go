// Package render generates every file the manifest implies: the containers'
// Proxmox specs, Terraform root modules (Authentik and per service), the
// Caddyfile, the Unbound zone, the PostgreSQL init SQL, per-host facts for
// NixOS, and health-check scripts.
//
// Rendering is pure and deterministic: the same manifest gives
// byte-identical files. No secret, API URL or token is ever written; where a
// file needs one it refers to it (a Terraform variable, a secret's name).
package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	tfconfig "github.com/hashicorp/terraform-config-inspect/tfconfig"
	"github.com/nixmox/nixmox/pkg/graph"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// Tree is a set of generated files by slash-separated relative path.
type Tree map[string][]byte

// Paths returns the tree's paths, sorted.
func (t Tree) Paths() []string {
	out := make([]string, 0, len(t))
	for p := range t {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Options select what to render.
type Options struct {
	// Services, if not empty, limits the per-service files to these
	// services and everything they need (as `plan --service`).
	Services []string
	// ManifestDir is the directory the manifest's relative paths (Terraform
	// modules) are relative to.
	ManifestDir string
	// OutDir is where the tree will be written, so that generated Terraform
	// can refer to the user's modules by a relative path. "" means the
	// paths are left relative to the manifest.
	OutDir string
}

// Render renders every file for the manifest behind g, which must be valid.
func Render(g *graph.Graph, opts Options) (Tree, error) {
	r := &renderer{g: g, m: g.Manifest(), opts: opts, tree: Tree{}}
	r.services = g.Order()
	if len(opts.Services) > 0 {
		for _, s := range opts.Services {
			if !g.Has(s) {
				return nil, fmt.Errorf("unknown or disabled service %q", s)
			}
		}
		r.services = g.Closure(opts.Services...)
	}
	r.byName = append([]string(nil), r.services...)
	sort.Strings(r.byName)
	for _, step := range []func() error{r.containers, r.hosts, r.health, r.caddy, r.dns, r.postgres, r.terraform} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return r.tree, nil
}

type renderer struct {
	g        *graph.Graph
	m        *manifest.Manifest
	opts     Options
	services []string // selected, in dependency order
	byName   []string // the same, sorted by name
	tree     Tree
	// tfModules holds the user's Terraform modules read so far, by
	// directory (loadModule).
	tfModules map[string]*tfconfig.Module
}

// each calls fn for every selected service, in name order.
func (r *renderer) each(fn func(*manifest.Service) error) error {
	for _, n := range r.byName {
		if err := fn(r.m.Service(n)); err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) put(p string, data []byte) { r.tree[path.Clean(p)] = data }

// putJSON writes v as indented JSON with a final newline. Struct fields keep
// their order and map keys are sorted, so output is deterministic.
func (r *renderer) putJSON(p string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("rendering %s: %w", p, err)
	}
	r.put(p, buf.Bytes())
	return nil
}

func (r *renderer) domain() string { return DomainOf(r.m) }

// DomainOf is the homelab's DNS domain: network.domain, or the DNS
// service's hostname without its first label, or the first service's.
func DomainOf(m *manifest.Manifest) string {
	if d := m.Network.Domain; d != "" {
		return strings.ToLower(d)
	}
	for _, s := range m.Enabled() {
		if s.IP == m.Network.DNSServer {
			return parentDomain(s.Hostname)
		}
	}
	if all := m.Enabled(); len(all) > 0 {
		return parentDomain(all[0].Hostname)
	}
	return ""
}

func parentDomain(h string) string {
	_, rest, _ := strings.Cut(strings.ToLower(h), ".")
	return rest
}

// prefixLen is the network's prefix length.
func (r *renderer) prefixLen() string {
	_, bits, _ := strings.Cut(r.m.Network.NetworkCIDR, "/")
	return bits
}

// upstream turns a route's upstream into an address the proxy can reach:
// localhost and 127.0.0.1 mean the service's own container.
func upstream(s *manifest.Service, up string) string {
	host, port, _ := strings.Cut(up, ":")
	if host == "localhost" || host == "127.0.0.1" {
		host = s.IP
	}
	return host + ":" + port
}

// authProvider returns the enabled provider service for an auth block.
func (r *renderer) authProvider(a *manifest.Auth) *manifest.Service {
	name := manifest.DefaultAuthProvider()
	if a != nil && a.Provider != "" {
		name = a.Provider
	}
	return r.m.Service(name)
}

// routeAuth is the auth that applies to a route: its own, else the
// service's.
func routeAuth(s *manifest.Service, rt *manifest.Route) *manifest.Auth {
	if rt.Auth != nil {
		return rt.Auth
	}
	return s.Interface.Auth
}

// routeName names a route for generated identifiers: the service, plus the
// route's name in the named form.
func routeName(s *manifest.Service, rt *manifest.Route) string {
	if rt.Name == "" {
		return s.Name
	}
	return s.Name + "-" + rt.Name
}

// ident turns a name (letters, digits, '-') into a Terraform/SQL-safe
// identifier.
func ident(name string) string { return strings.ReplaceAll(name, "-", "_") }
