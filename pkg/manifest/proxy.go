package manifest

import (
	"bytes"
	"reflect"
	"sort"

	"github.com/go-json-experiment/json/jsontext"
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

// decodeStream implements streamDecoder: it tells the two forms apart and
// decodes the one the manifest used.
func (p *Proxy) decodeStream(d *decoder) error {
	if d.dec.PeekKind() != '{' {
		return d.typeError("an object (one route, or named routes)")
	}
	raw, err := d.dec.ReadValue()
	if err != nil {
		return err
	}
	raw = bytes.Clone(raw) // ReadValue's bytes are only valid until the next read
	p.Named = isNamedRoutes(raw)
	sub := &decoder{dec: jsontext.NewDecoder(bytes.NewReader(raw)), stack: append([]string(nil), d.stack...)}
	defer func() { d.diags = append(d.diags, sub.diags...) }()
	if !p.Named {
		r := &Route{}
		applyDefaults(reflect.ValueOf(r).Elem())
		p.Routes = []*Route{r}
		return sub.decode(reflect.ValueOf(r).Elem())
	}
	if _, err := sub.dec.ReadToken(); err != nil {
		return err
	}
	for sub.dec.PeekKind() != '}' {
		tok, err := sub.dec.ReadToken()
		if err != nil {
			return err
		}
		r := &Route{Name: tok.String()}
		applyDefaults(reflect.ValueOf(r).Elem())
		sub.push(r.Name)
		err = sub.decode(reflect.ValueOf(r).Elem())
		sub.pop()
		if err != nil {
			return err
		}
		p.Routes = append(p.Routes, r)
	}
	sort.Slice(p.Routes, func(i, j int) bool { return p.Routes[i].Name < p.Routes[j].Name })
	return nil
}

// isNamedRoutes reports whether the object raw is a map of named routes: not
// empty, no key is a route field, and every value is an object.
func isNamedRoutes(raw []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	n := 0
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil || routeKeys[tok.String()] || dec.PeekKind() != '{' {
			return false
		}
		if dec.SkipValue() != nil {
			return false
		}
		n++
	}
	return n > 0
}
