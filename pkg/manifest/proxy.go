package manifest

import (
	"reflect"
	"sort"
)

// Proxy is how the reverse proxy reaches a service. In the manifest it is
// either one route (an object with domain, upstream, ...) or a set of named
// routes (an object whose every value is a route object).
type Proxy struct {
	// Routes holds the routes sorted by name. A single route has Name "".
	Routes []*Route
	// Named reports whether the manifest used the named-routes form.
	Named bool
}

// Route is one site of the reverse proxy.
type Route struct {
	Domain      string            `json:"domain" doc:"Domain the route serves; a DNS name, unique together with path."`
	Path        string            `json:"path" default:"/" doc:"URL path prefix the route serves; starts with /."`
	Upstream    string            `json:"upstream" doc:"host:port the proxy forwards to. localhost means the service's own IP."`
	TLS         bool              `json:"tls" default:"true" doc:"Serve HTTPS. Domains that are not public get certificates from the proxy's internal CA."`
	Authz       bool              `json:"authz" default:"false" doc:"Ask the auth provider before every request (forward_auth), using the route's or the service's auth provider."`
	Headers     map[string]string `json:"headers" doc:"Response headers to set on the route."`
	Auth        *Auth             `json:"auth" doc:"Auth for this route alone; overrides interface.auth."`
	ExtraConfig string            `json:"extra_config" doc:"Raw Caddy configuration placed verbatim inside the route's site block. It is NOT validated or escaped: it is trusted input."`

	// Name is the route's key in the named form, "" for a single route.
	Name string `json:"-"`
}

// routeKeys are the fields that make an object a single route rather than a
// map of named routes.
var routeKeys = func() map[string]bool {
	keys := map[string]bool{}
	for _, f := range fieldsOf(reflect.TypeOf(Route{})) {
		keys[f.name] = true
	}
	return keys
}()

// decodeTree implements treeDecoder: it tells the two forms apart and decodes
// the one the manifest used.
func (p *Proxy) decodeTree(d *decoder, path Path, in any) {
	obj, ok := in.(map[string]any)
	if !ok {
		d.typeError(path, in, "an object (one route, or named routes)")
		return
	}
	named := len(obj) > 0
	for k, v := range obj {
		if _, isObj := v.(map[string]any); !isObj || routeKeys[k] {
			named = false
			break
		}
	}
	p.Named = named
	if !named {
		r := &Route{}
		applyDefaults(reflect.ValueOf(r).Elem())
		d.decode(path, in, reflect.ValueOf(r).Elem())
		p.Routes = []*Route{r}
		return
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		r := &Route{Name: name}
		applyDefaults(reflect.ValueOf(r).Elem())
		d.decode(path.Key(name), obj[name], reflect.ValueOf(r).Elem())
		p.Routes = append(p.Routes, r)
	}
}
