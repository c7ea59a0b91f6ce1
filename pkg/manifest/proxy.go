package manifest

import (
	"reflect"
	"slices"
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

// decodeStream implements streamDecoder: it tells the two forms apart by
// the first member and decodes the one the manifest used. An object whose
// first member is a route field, or not an object, is one route; otherwise
// every member is a named route.
func (p *Proxy) decodeStream(d *decoder) error {
	if d.dec.PeekKind() != '{' {
		return d.typeError("an object (one route, or named routes)")
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	single := &Route{}
	reflect.ValueOf(single).Elem().Set(routeInfo().defaults)
	if d.dec.PeekKind() == '}' {
		p.Routes = []*Route{single}
		_, err := d.dec.ReadToken()
		return err
	}
	first, err := d.readString()
	if err != nil {
		return err
	}
	if routeKeys[first] || d.dec.PeekKind() != '{' {
		p.Routes = []*Route{single}
		return d.structMembers(reflect.ValueOf(single).Elem(), routeInfo(), first, true)
	}
	p.Named = true
	var names []string
	for name := first; ; {
		if slices.Contains(names, name) {
			return d.duplicate(name)
		}
		names = append(names, name)
		r := &Route{}
		reflect.ValueOf(r).Elem().Set(routeInfo().defaults)
		r.Name = name
		d.push(name)
		if d.dec.PeekKind() == '{' {
			err = d.decode(reflect.ValueOf(r).Elem(), routeInfo())
			p.Routes = append(p.Routes, r)
		} else {
			err = d.typeError("a route object (the proxy's first member is a named route, so all are)")
		}
		d.pop()
		if err != nil {
			return err
		}
		if d.dec.PeekKind() == '}' {
			break
		}
		if name, err = d.readString(); err != nil {
			return err
		}
	}
	sort.Slice(p.Routes, func(i, j int) bool { return p.Routes[i].Name < p.Routes[j].Name })
	_, err = d.dec.ReadToken()
	return err
}
