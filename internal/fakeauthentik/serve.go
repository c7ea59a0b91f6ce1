package fakeauthentik

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	api "goauthentik.io/api/v3"
)

// apiError is an answer other than success: a status and DRF's error body.
type apiError struct {
	status int
	body   any
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %v", e.status, e.body) }

// invalid is a 400 with DRF's {"field": ["message"]} body.
func invalid(field, format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, map[string][]string{field: {fmt.Sprintf(format, args...)}}}
}

var notFound = &apiError{http.StatusNotFound, map[string]string{"detail": "No matching object found."}}

var (
	slugRE     = regexp.MustCompile(`^[-a-zA-Z0-9_]+$`)
	requiredRE = regexp.MustCompile(`^no value given for required property (\S+)$`)
)

// decode reads a request body into Authentik's request model (refusing
// what its schema refuses) and returns it as a map with only the fields
// the client sent.
func decode(body []byte, model any) (obj, *apiError) {
	if err := json.Unmarshal(body, model); err != nil {
		if m := requiredRE.FindStringSubmatch(err.Error()); m != nil {
			return nil, invalid(m[1], "This field is required.")
		}
		return nil, invalid("non_field_errors", "%v", err)
	}
	var o obj
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, invalid("non_field_errors", "%v", err)
	}
	return o, nil
}

// checked returns o as JSON after checking it against Authentik's response
// model: what fails here is a bug of the fake, not of the client.
func checked(model any, o any) ([]byte, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, model); err != nil {
		return nil, fmt.Errorf("fakeauthentik: its answer does not meet Authentik's schema (%T): %w", model, err)
	}
	return data, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	status, model, out := s.handle(r, body)
	var data []byte
	if status < 300 && model != nil {
		var err error
		if data, err = checked(model, out); err != nil {
			status, data = http.StatusInternalServerError, []byte(err.Error())
		}
	} else if out != nil {
		data, _ = json.Marshal(out)
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: status})
	s.mu.Unlock()
	if data != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// page wraps results in Authentik's pagination.
func page(results []obj) obj {
	if results == nil {
		results = []obj{}
	}
	n := len(results)
	return obj{"pagination": obj{"next": 0, "previous": 0, "count": n, "current": 1, "total_pages": 1,
		"start_index": min(1, n), "end_index": n}, "results": results, "autocomplete": obj{}}
}

var (
	providerPath = regexp.MustCompile(`^/providers/(oauth2|proxy|ldap|radius)/(?:(\d+)/)?$`)
	itemPath     = regexp.MustCompile(`^/(outposts/instances|core/applications|core/users|core/tokens|rbac/roles)/([^/]+)/$`)
	keyPairPath  = regexp.MustCompile(`^/crypto/certificatekeypairs/([^/]+)/(view_certificate|view_private_key)/$`)
	tokenKeyPath = regexp.MustCompile(`^/core/tokens/([^/]+)/view_key/$`)
	assignPath   = regexp.MustCompile(`^/rbac/permissions/assigned_by_roles/([^/]+)/(assign|unassign)/$`)
)

// handle answers one request: a status, the response model the answer is
// checked against (nil for none), and the answer.
func (s *Server) handle(r *http.Request, body []byte) (int, any, any) {
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		return http.StatusForbidden, nil, obj{"detail": "Authentication credentials were not provided."}
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/api/v3")
	if !ok {
		return http.StatusNotFound, nil, nil
	}
	s.mu.Lock()
	status, model, out, err := s.route(r.Method, p, r.URL.Query(), body)
	s.mu.Unlock()
	if strings.HasPrefix(p, "/outposts/instances/") && r.Method == http.MethodGet && s.OutpostReadHold > 0 && p != "/outposts/instances/" && p != "/outposts/instances/default_settings/" {
		// See OutpostReadHold: the outpost was read on arrival and is
		// answered late, as a slow server would; this widens a race
		// window and synchronises nothing.
		time.Sleep(s.OutpostReadHold)
	}
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return ae.status, nil, ae.body
		}
		return http.StatusInternalServerError, nil, obj{"detail": err.Error()}
	}
	return status, model, out
}

func (s *Server) route(method, p string, q map[string][]string, body []byte) (int, any, any, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	switch {
	case p == "/root/config/" && method == http.MethodGet:
		return 200, &api.Config{}, obj{"error_reporting": obj{"enabled": false, "sentry_dsn": "", "environment": "", "send_pii": false, "traces_sample_rate": 0},
			"capabilities": []string{}, "cache_timeout": 300, "cache_timeout_flows": 300, "cache_timeout_policies": 300}, nil
	case p == "/flows/instances/" && method == http.MethodGet:
		return 200, &api.PaginatedFlowList{}, page(filter(s.flows, map[string]string{"slug": get("slug"), "designation": get("designation")})), nil
	case p == "/propertymappings/provider/scope/" && method == http.MethodGet:
		var out []obj
		for _, m := range filter(s.scopes, map[string]string{"name": get("name"), "scope_name": get("scope_name")}) {
			if managed := q["managed"]; len(managed) == 0 || slices.Contains(managed, m["managed"].(string)) {
				out = append(out, m)
			}
		}
		return 200, &api.PaginatedScopeMappingList{}, page(out), nil
	case p == "/crypto/certificatekeypairs/" && method == http.MethodGet:
		return 200, &api.PaginatedCertificateKeyPairList{}, page(filter(s.keypairs, map[string]string{"name": get("name")})), nil
	case keyPairPath.MatchString(p) && method == http.MethodGet:
		m := keyPairPath.FindStringSubmatch(p)
		if filter(s.keypairs, map[string]string{"pk": m[1]}) == nil {
			return 0, nil, nil, notFound
		}
		if m[2] == "view_private_key" {
			return 200, &api.CertificateData{}, obj{"data": s.keys[m[1]]}, nil
		}
		return 200, &api.CertificateData{}, obj{"data": "-----BEGIN CERTIFICATE-----\nFAKE\n-----END CERTIFICATE-----"}, nil
	case p == "/outposts/instances/default_settings/" && method == http.MethodGet:
		return 200, &api.OutpostDefaultConfig{}, obj{"config": defaultOutpostConfig()}, nil
	case p == "/outposts/instances/" && method == http.MethodGet:
		var out []obj
		for _, id := range slices.Sorted(maps.Keys(s.outposts)) {
			if n := get("name__iexact"); n == "" || strings.EqualFold(n, s.outposts[id]["name"].(string)) {
				out = append(out, s.outpostView(s.outposts[id]))
			}
		}
		return 200, &api.PaginatedOutpostList{}, page(out), nil
	case p == "/outposts/instances/" && method == http.MethodPost:
		o, err := s.putOutpost(nil, body, false)
		return 201, &api.Outpost{}, o, err
	case p == "/core/applications/" && method == http.MethodPost:
		o, err := s.putApp(nil, body)
		return 201, &api.Application{}, o, err
	case p == "/core/users/" && method == http.MethodGet:
		var out []obj
		for _, pk := range slices.Sorted(maps.Keys(s.users)) {
			if u := get("username"); u == "" || s.users[pk]["username"] == u {
				out = append(out, s.userView(s.users[pk]))
			}
		}
		return 200, &api.PaginatedUserList{}, page(out), nil
	case p == "/core/users/" && method == http.MethodPost:
		o, err := s.putUser(nil, body)
		return 201, &api.User{}, o, err
	case p == "/core/tokens/" && method == http.MethodPost:
		o, err := s.putToken(nil, body)
		return 201, &api.Token{}, o, err
	case tokenKeyPath.MatchString(p) && method == http.MethodGet:
		id := tokenKeyPath.FindStringSubmatch(p)[1]
		if s.tokens[id] == nil {
			return 0, nil, nil, notFound
		}
		return 200, &api.TokenView{}, obj{"key": s.tokenKeys[id]}, nil
	case p == "/rbac/roles/" && method == http.MethodPost:
		o, err := s.putRole(nil, body)
		return 201, &api.Role{}, o, err
	case assignPath.MatchString(p):
		m := assignPath.FindStringSubmatch(p)
		return s.assign(m[1], m[2], method, body)
	case p == "/rbac/permissions/roles/" && method == http.MethodGet:
		var out []obj
		for _, pm := range s.perms {
			if pm.role == get("uuid") {
				model := strings.SplitN(pm.model, ".", 2)[1]
				out = append(out, obj{"id": pm.id, "codename": pm.codename, "model": model, "app_label": pm.app,
					"object_pk": pm.opk, "name": pm.codename, "app_label_verbose": pm.app, "model_verbose": model,
					"object_description": nil})
			}
		}
		return 200, &api.PaginatedExtraRoleObjectPermissionList{}, page(out), nil
	case providerPath.MatchString(p):
		m := providerPath.FindStringSubmatch(p)
		return s.providerRoute(m[1], m[2], method, body)
	case itemPath.MatchString(p):
		m := itemPath.FindStringSubmatch(p)
		return s.item(m[1], m[2], method, body)
	}
	return 0, nil, nil, notFound
}

// filter returns the objects whose fields equal every non-empty value.
func filter(objs []obj, by map[string]string) []obj {
	var out []obj
	for _, o := range objs {
		ok := true
		for k, v := range by {
			if v != "" && fmt.Sprint(o[k]) != v {
				ok = false
			}
		}
		if ok {
			out = append(out, o)
		}
	}
	return out
}

// item serves one object of the kinds addressed by a path key.
func (s *Server) item(kind, key, method string, body []byte) (int, any, any, error) {
	switch kind {
	case "outposts/instances":
		o := s.outposts[key]
		if o == nil {
			return 0, nil, nil, notFound
		}
		switch method {
		case http.MethodGet:
			return 200, &api.Outpost{}, s.outpostView(o), nil
		case http.MethodPut, http.MethodPatch:
			v, err := s.putOutpost(o, body, method == http.MethodPatch)
			return 200, &api.Outpost{}, v, err
		case http.MethodDelete:
			// Authentik deletes even the embedded outpost (and makes a new
			// one, with a new uuid and no providers, when it next starts).
			delete(s.outposts, key)
			return 204, nil, nil, nil
		}
	case "core/applications":
		o := s.apps[key]
		if o == nil {
			return 0, nil, nil, notFound
		}
		switch method {
		case http.MethodGet:
			return 200, &api.Application{}, s.appView(o), nil
		case http.MethodPut:
			v, err := s.putApp(o, body)
			return 200, &api.Application{}, v, err
		case http.MethodDelete:
			delete(s.apps, key)
			return 204, nil, nil, nil
		}
	case "core/users":
		pk, _ := strconv.Atoi(key)
		o := s.users[int32(pk)]
		if o == nil {
			return 0, nil, nil, notFound
		}
		switch method {
		case http.MethodGet:
			return 200, &api.User{}, s.userView(o), nil
		case http.MethodPut, http.MethodPatch:
			v, err := s.putUser(o, body)
			return 200, &api.User{}, v, err
		case http.MethodDelete:
			delete(s.users, int32(pk))
			for id, t := range s.tokens {
				if t["user"] == int32(pk) {
					delete(s.tokens, id)
				}
			}
			return 204, nil, nil, nil
		}
	case "core/tokens":
		o := s.tokens[key]
		if o == nil {
			return 0, nil, nil, notFound
		}
		switch method {
		case http.MethodGet:
			return 200, &api.Token{}, s.tokenView(o), nil
		case http.MethodPut:
			v, err := s.putToken(o, body)
			return 200, &api.Token{}, v, err
		case http.MethodDelete:
			delete(s.tokens, key)
			return 204, nil, nil, nil
		}
	case "rbac/roles":
		o := s.roles[key]
		if o == nil {
			return 0, nil, nil, notFound
		}
		switch method {
		case http.MethodGet:
			return 200, &api.Role{}, o, nil
		case http.MethodPut:
			v, err := s.putRole(o, body)
			return 200, &api.Role{}, v, err
		case http.MethodDelete:
			delete(s.roles, key)
			s.perms = slices.DeleteFunc(s.perms, func(p perm) bool { return p.role == key })
			for _, u := range s.users {
				u["roles"] = slices.DeleteFunc(slices.Clone(u["roles"].([]string)), func(r string) bool { return r == key })
			}
			return 204, nil, nil, nil
		}
	}
	return 0, nil, nil, &apiError{http.StatusMethodNotAllowed, obj{"detail": "Method \"" + method + "\" not allowed."}}
}
