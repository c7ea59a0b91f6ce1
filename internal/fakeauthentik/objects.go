package fakeauthentik

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	api "goauthentik.io/api/v3"
)

func strs(v any) []string {
	out := []string{}
	switch v := v.(type) {
	case []string:
		return slices.Clone(v)
	case []any:
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
	}
	return out
}

func ints(v any) []int32 {
	out := []int32{}
	switch v := v.(type) {
	case []int32:
		return slices.Clone(v)
	case []any:
		for _, e := range v {
			if f, ok := e.(float64); ok {
				out = append(out, int32(f))
			}
		}
	}
	return out
}

// defaults sets the fields the client left out to the model's defaults.
func defaults(o obj, d obj) {
	for k, v := range d {
		if _, ok := o[k]; !ok {
			o[k] = v
		}
	}
}

func (s *Server) flowExists(pk any) bool {
	return pk != nil && filter(s.flows, map[string]string{"pk": fmt.Sprint(pk)}) != nil
}

// Providers.

var providerMeta = map[string]struct {
	request   func() any // a new request model
	response  func() any // a new response model
	component string
	verbose   string
	modelName string
	defaults  func() obj
}{
	"oauth2": {func() any { return &api.OAuth2ProviderRequest{} }, func() any { return &api.OAuth2Provider{} }, "ak-provider-oauth2-form", "OAuth2/OpenID Provider", "authentik_providers_oauth2.oauth2provider",
		func() obj {
			return obj{"client_type": "confidential", "client_id": randomHex(20), "client_secret": randomHex(64),
				"grant_types": []string{"authorization_code", "refresh_token"}, "access_code_validity": "minutes=1",
				"access_token_validity": "hours=1", "refresh_token_validity": "days=30", "refresh_token_threshold": "seconds=0",
				"include_claims_in_id_token": true, "signing_key": nil, "encryption_key": nil, "logout_uri": "",
				"logout_method": "backchannel", "sub_mode": "hashed_user_id", "issuer_mode": "per_provider",
				"jwt_federation_sources": []string{}, "jwt_federation_providers": []int32{}}
		}},
	"proxy": {func() any { return &api.ProxyProviderRequest{} }, func() any { return &api.ProxyProvider{} }, "ak-provider-proxy-form", "Proxy Provider", "authentik_providers_proxy.proxyprovider",
		func() obj {
			return obj{"client_id": randomHex(20), "internal_host": "", "internal_host_ssl_validation": true, "certificate": nil,
				"skip_path_regex": "", "basic_auth_enabled": false, "basic_auth_password_attribute": "", "basic_auth_user_attribute": "",
				"mode": "proxy", "intercept_header_auth": true, "cookie_domain": "", "jwt_federation_sources": []string{},
				"jwt_federation_providers": []int32{}, "access_token_validity": "minutes=10", "refresh_token_validity": "days=30"}
		}},
	"ldap": {func() any { return &api.LDAPProviderRequest{} }, func() any { return &api.LDAPProvider{} }, "ak-provider-ldap-form", "LDAP Provider", "authentik_providers_ldap.ldapprovider",
		func() obj {
			return obj{"base_dn": "DC=ldap,DC=goauthentik,DC=io", "certificate": nil, "tls_server_name": "", "uid_start_number": 2000,
				"gid_start_number": 4000, "search_mode": "direct", "bind_mode": "direct", "mfa_support": true}
		}},
	"radius": {func() any { return &api.RadiusProviderRequest{} }, func() any { return &api.RadiusProvider{} }, "ak-provider-radius-form", "Radius Provider", "authentik_providers_radius.radiusprovider",
		func() obj {
			return obj{"client_networks": "0.0.0.0/0, ::/0", "shared_secret": randomHex(20), "mfa_support": true, "certificate": nil}
		}},
}

func (s *Server) providerRoute(kind, id, method string, body []byte) (int, any, any, error) {
	model := providerMeta[kind].response()
	if id == "" {
		if method != http.MethodPost {
			return 0, nil, nil, &apiError{http.StatusMethodNotAllowed, obj{"detail": "Method not allowed."}}
		}
		o, err := s.putProvider(kind, nil, body)
		return 201, model, o, err
	}
	pk, _ := strconv.Atoi(id)
	p := s.providers[int32(pk)]
	if p == nil || p.kind != kind {
		return 0, nil, nil, notFound
	}
	switch method {
	case http.MethodGet:
		return 200, model, s.providerView(p), nil
	case http.MethodPut:
		o, err := s.putProvider(kind, p, body)
		return 200, model, o, err
	case http.MethodDelete:
		delete(s.providers, int32(pk))
		for _, a := range s.apps {
			if a["provider"] == int32(pk) {
				a["provider"] = nil // Application.provider: on_delete=SET_NULL
			}
		}
		for _, o := range s.outposts {
			o["providers"] = slices.DeleteFunc(ints(o["providers"]), func(x int32) bool { return x == int32(pk) })
		}
		return 204, nil, nil, nil
	}
	return 0, nil, nil, &apiError{http.StatusMethodNotAllowed, obj{"detail": "Method not allowed."}}
}

func (s *Server) putProvider(kind string, old *provider, body []byte) (obj, error) {
	meta := providerMeta[kind]
	o, err := decode(body, meta.request())
	if err != nil {
		return nil, err
	}
	// Provider.name is unique across every kind of provider.
	for _, p := range s.providers {
		if p != old && p.o["name"] == o["name"] {
			return nil, invalid("name", "provider with this name already exists.")
		}
	}
	for _, f := range []string{"authorization_flow", "invalidation_flow", "authentication_flow"} {
		if v, ok := o[f]; ok && v != nil && !s.flowExists(v) {
			return nil, invalid(f, "Invalid pk %q - object does not exist.", fmt.Sprint(v))
		}
	}
	for _, pm := range strs(o["property_mappings"]) {
		if filter(s.scopes, map[string]string{"pk": pm}) == nil {
			return nil, invalid("property_mappings", "Invalid pk %q - object does not exist.", pm)
		}
	}
	for _, f := range []string{"signing_key", "encryption_key", "certificate"} {
		if v, ok := o[f]; ok && v != nil && filter(s.keypairs, map[string]string{"pk": fmt.Sprint(v)}) == nil {
			return nil, invalid(f, "Invalid pk %q - object does not exist.", fmt.Sprint(v))
		}
	}
	if kind == "oauth2" {
		if id, ok := o["client_id"]; ok {
			for _, p := range s.providers {
				if p != old && p.kind == "oauth2" && p.o["client_id"] == id {
					return nil, invalid("client_id", "o auth2 provider with this client id already exists.")
				}
			}
		}
		// A redirect URI the client sent without redirect_uri_type is
		// stored with the model's default, "authorization".
		var uris []obj
		for _, u := range o["redirect_uris"].([]any) {
			m := u.(map[string]any)
			if _, ok := m["redirect_uri_type"]; !ok {
				m["redirect_uri_type"] = "authorization"
			}
			uris = append(uris, m)
		}
		if uris == nil {
			uris = []obj{}
		}
		o["redirect_uris"] = uris
	}
	if old != nil {
		// An update sets what it sends and keeps the rest (a
		// ModelSerializer's update sets only the validated fields).
		maps.Copy(old.o, o)
		return s.providerView(old), nil
	}
	defaults(o, meta.defaults())
	defaults(o, obj{"authentication_flow": nil, "property_mappings": []string{}})
	o["pk"] = s.pk()
	p := &provider{kind: kind, o: o}
	s.providers[o["pk"].(int32)] = p
	return s.providerView(p), nil
}

func (s *Server) providerView(p *provider) obj {
	meta := providerMeta[p.kind]
	v := obj{}
	for k, x := range p.o {
		v[k] = x
	}
	v["component"] = meta.component
	v["verbose_name"] = meta.verbose
	v["verbose_name_plural"] = meta.verbose + "s"
	v["meta_model_name"] = meta.modelName
	v["assigned_application_slug"], v["assigned_application_name"] = nil, nil
	v["assigned_backchannel_application_slug"], v["assigned_backchannel_application_name"] = nil, nil
	for _, a := range s.apps {
		if a["provider"] == p.o["pk"] {
			v["assigned_application_slug"], v["assigned_application_name"] = a["slug"], a["name"]
		}
	}
	if p.kind != "oauth2" {
		set := []string{}
		for _, o := range s.outposts {
			if slices.Contains(ints(o["providers"]), p.o["pk"].(int32)) {
				set = append(set, "Outpost "+o["name"].(string))
			}
		}
		v["outpost_set"] = set
	}
	if p.kind == "proxy" {
		v["redirect_uris"] = []obj{{"matching_mode": "strict", "url": fmt.Sprint(p.o["external_host"]) + "/outpost.goauthentik.io/callback?X-authentik-auth-callback=true", "redirect_uri_type": "authorization"}}
	}
	return v
}

// providerBrief is a provider as nested in other objects (Provider).
func (s *Server) providerBrief(pk int32) obj {
	p := s.providers[pk]
	if p == nil {
		return nil
	}
	v := s.providerView(p)
	b := obj{}
	for _, k := range []string{"pk", "name", "authentication_flow", "authorization_flow", "invalidation_flow", "property_mappings",
		"component", "assigned_application_slug", "assigned_application_name", "assigned_backchannel_application_slug",
		"assigned_backchannel_application_name", "verbose_name", "verbose_name_plural", "meta_model_name"} {
		b[k] = v[k]
	}
	return b
}

// Outposts.

func (s *Server) putOutpost(old obj, body []byte, partial bool) (obj, error) {
	var o obj
	var err *apiError
	if partial {
		o, err = decode(body, &api.PatchedOutpostRequest{})
	} else {
		o, err = decode(body, &api.OutpostRequest{})
	}
	if err != nil {
		return nil, err
	}
	if n, ok := o["name"]; ok {
		for _, x := range s.outposts {
			if !sameObj(x, old) && x["name"] == n {
				return nil, invalid("name", "outpost with this name already exists.")
			}
		}
		if old != nil && old["managed"] == embeddedManaged && n != EmbeddedOutpost {
			return nil, invalid("name", "Embedded outpost's name cannot be changed")
		}
	}
	if c, ok := o["config"]; ok {
		if _, isMap := c.(map[string]any); !isMap {
			return nil, invalid("config", "Failed to validate config")
		}
	}
	if provs, ok := o["providers"]; ok {
		// initial_data's type (absent in a PATCH that does not send it)
		// names the provider kind it takes: proxy, ldap or radius.
		typ, _ := o["type"].(string)
		for _, pk := range ints(provs) {
			p := s.providers[pk]
			if p == nil {
				return nil, invalid("providers", "Invalid pk \"%d\" - object does not exist.", pk)
			}
			if typ != "" && p.kind != typ {
				return nil, invalid("providers", "Outpost type %s can't be used with %s providers.", typ, providerMeta[p.kind].verbose)
			}
		}
		if len(ints(provs)) == 0 && (old == nil || old["managed"] != embeddedManaged) {
			return nil, invalid("providers", "This list may not be empty.")
		}
		o["providers"] = ints(provs)
	}
	if old != nil {
		for k, v := range o {
			old[k] = v
		}
		return s.outpostView(old), nil
	}
	defaults(o, obj{"service_connection": nil, "config": defaultOutpostConfig(), "managed": nil})
	id := newUUID()
	o["pk"] = id
	s.outposts[id] = o
	s.outpostAccount(id)
	return s.outpostView(o), nil
}

func sameObj(a, b obj) bool { return a != nil && b != nil && a["pk"] == b["pk"] }

func (s *Server) outpostView(o obj) obj {
	v := obj{}
	for k, x := range o {
		v[k] = x
	}
	objs := []obj{}
	for _, pk := range ints(o["providers"]) {
		objs = append(objs, s.providerBrief(pk))
	}
	v["providers"] = ints(o["providers"])
	v["providers_obj"] = objs
	v["service_connection_obj"] = nil
	v["refresh_interval_s"] = 300
	v["token_identifier"] = "ak-outpost-" + o["pk"].(string) + "-api"
	return v
}

// Applications.

func (s *Server) putApp(old obj, body []byte) (obj, error) {
	o, err := decode(body, &api.ApplicationRequest{})
	if err != nil {
		return nil, err
	}
	slug, _ := o["slug"].(string)
	if !slugRE.MatchString(slug) {
		return nil, invalid("slug", "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.")
	}
	if x := s.apps[slug]; x != nil && !sameObj(x, old) {
		return nil, invalid("slug", "application with this slug already exists.")
	}
	if pv, ok := o["provider"]; ok && pv != nil {
		pk := int32(pv.(float64))
		if s.providers[pk] == nil {
			return nil, invalid("provider", "Invalid pk \"%d\" - object does not exist.", pk)
		}
		for _, a := range s.apps {
			if !sameObj(a, old) && a["provider"] == pk {
				return nil, invalid("provider", "application with this provider already exists.")
			}
		}
		o["provider"] = pk
	}
	o["backchannel_providers"] = ints(o["backchannel_providers"])
	defaults(o, obj{"provider": nil, "open_in_new_tab": false, "meta_launch_url": "", "meta_icon": "", "meta_description": "",
		"meta_publisher": "", "policy_engine_mode": "any", "group": "", "meta_hide": false})
	if old != nil {
		o["pk"] = old["pk"]
		delete(s.apps, old["slug"].(string))
	} else {
		o["pk"] = newUUID()
	}
	s.apps[slug] = o
	return s.appView(o), nil
}

func (s *Server) appView(o obj) obj {
	v := obj{}
	for k, x := range o {
		v[k] = x
	}
	v["provider_obj"] = nil
	if pk, ok := o["provider"].(int32); ok {
		v["provider_obj"] = s.providerBrief(pk)
	}
	back := []obj{}
	for _, pk := range ints(o["backchannel_providers"]) {
		back = append(back, s.providerBrief(pk))
	}
	v["backchannel_providers_obj"] = back
	v["launch_url"] = nil
	if u, _ := o["meta_launch_url"].(string); u != "" {
		v["launch_url"] = u
	}
	v["meta_icon_url"], v["meta_icon_themed_urls"] = nil, nil
	return v
}

// Users.

func (s *Server) putUser(old obj, body []byte) (obj, error) {
	o, err := decode(body, &api.UserRequest{})
	if err != nil {
		return nil, err
	}
	for _, u := range s.users {
		if !sameObj(u, old) && u["username"] == o["username"] {
			return nil, invalid("username", "user with this username already exists.")
		}
	}
	if t, _ := o["type"].(string); t == "internal_service_account" {
		return nil, invalid("type", "Setting a user to internal service account is not allowed.")
	}
	for _, r := range strs(o["roles"]) {
		if s.roles[r] == nil {
			return nil, invalid("roles", "Invalid pk %q - object does not exist.", r)
		}
	}
	o["roles"], o["groups"] = strs(o["roles"]), strs(o["groups"])
	if old != nil {
		for k, v := range o {
			old[k] = v
		}
		old["last_updated"] = now()
		return s.userView(old), nil
	}
	return s.userView(s.newUser(o, false)), nil
}

func (s *Server) userView(u obj) obj {
	v := obj{}
	for k, x := range u {
		v[k] = x
	}
	roles := []obj{}
	for _, r := range strs(u["roles"]) {
		if role := s.roles[r]; role != nil {
			roles = append(roles, role)
		}
	}
	v["roles_obj"] = roles
	v["groups_obj"] = []obj{}
	return v
}

// Tokens.

func (s *Server) putToken(old obj, body []byte) (obj, error) {
	o, err := decode(body, &api.TokenRequest{})
	if err != nil {
		return nil, err
	}
	id, _ := o["identifier"].(string)
	if !slugRE.MatchString(id) {
		return nil, invalid("identifier", "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.")
	}
	if x := s.tokens[id]; x != nil && !sameObj(x, old) {
		return nil, invalid("identifier", "token with this identifier already exists.")
	}
	if uv, ok := o["user"]; ok {
		pk := int32(uv.(float64))
		if s.users[pk] == nil {
			return nil, invalid("user", "Invalid pk \"%d\" - object does not exist.", pk)
		}
		o["user"] = pk
	} else {
		o["user"] = int32(1) // request.user: akadmin, whose token the provider uses
	}
	defaults(o, obj{"intent": "api", "expiring": true, "description": ""})
	switch o["intent"] {
	case "api":
		// TokenSerializer.validate: an API token's expiry is the default
		// duration, whatever was asked.
		o["expires"] = time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339Nano)
	case "app_password":
		defaults(o, obj{"expires": time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339Nano)})
	default:
		return nil, invalid("intent", "Invalid intent %v", o["intent"])
	}
	if old != nil {
		o["pk"], o["managed"] = old["pk"], old["managed"]
		delete(s.tokens, old["identifier"].(string))
		s.tokenKeys[id] = s.tokenKeys[old["identifier"].(string)]
	} else {
		o["pk"], o["managed"] = newUUID(), nil
		s.tokenKeys[id] = randomHex(30)
	}
	s.tokens[id] = o
	return s.tokenView(o), nil
}

func (s *Server) tokenView(t obj) obj {
	v := obj{}
	for k, x := range t {
		v[k] = x
	}
	v["user_obj"] = s.userView(s.users[t["user"].(int32)])
	return v
}

// Roles and their permissions.

func (s *Server) putRole(old obj, body []byte) (obj, error) {
	o, err := decode(body, &api.RoleRequest{})
	if err != nil {
		return nil, err
	}
	for _, r := range s.roles {
		if !sameObj(r, old) && r["name"] == o["name"] {
			return nil, invalid("name", "role with this name already exists.")
		}
	}
	if old != nil {
		old["name"] = o["name"]
		return old, nil
	}
	o["pk"] = newUUID()
	s.roles[o["pk"].(string)] = o
	return o, nil
}

func (s *Server) assign(role, action, method string, body []byte) (int, any, any, error) {
	if s.roles[role] == nil {
		return 0, nil, nil, notFound
	}
	if (action == "assign") != (method == http.MethodPost) || (action == "unassign" && method != http.MethodPatch) {
		return 0, nil, nil, &apiError{http.StatusMethodNotAllowed, obj{"detail": "Method not allowed."}}
	}
	var o obj
	var err *apiError
	if action == "assign" {
		o, err = decode(body, &api.PermissionAssignRequest{})
	} else {
		o, err = decode(body, &api.PatchedPermissionAssignRequest{})
	}
	if err != nil {
		return 0, nil, nil, err
	}
	model, _ := o["model"].(string)
	opk, _ := o["object_pk"].(string)
	if model != "" && !s.objectExists(model, opk) {
		return 0, nil, nil, invalid("non_field_errors", "Object does not exist")
	}
	var results []obj
	for _, name := range strs(o["permissions"]) {
		permModel, known := permissions[name]
		if !known {
			return 0, nil, nil, invalid("permissions", "Invalid permission %q", name)
		}
		if model != "" && permModel != model {
			return 0, nil, nil, invalid("permissions", "Permission %q is not of model %s", name, model)
		}
		app, codename, _ := strings.Cut(name, ".")
		if action == "unassign" {
			s.perms = slices.DeleteFunc(s.perms, func(p perm) bool {
				return p.role == role && p.app == app && p.codename == codename && p.opk == opk
			})
			continue
		}
		p := perm{id: s.pk(), role: role, app: app, codename: codename, model: permModel, opk: opk}
		s.perms = append(s.perms, p)
		results = append(results, obj{"id": strconv.Itoa(int(p.id))})
	}
	if action == "unassign" {
		return 204, nil, nil, nil
	}
	return 200, &[]api.PermissionAssignResult{}, results, nil
}

func (s *Server) objectExists(model, pk string) bool {
	n, err := strconv.Atoi(pk)
	switch model {
	case "authentik_providers_ldap.ldapprovider", "authentik_providers_radius.radiusprovider":
		want := map[string]string{"authentik_providers_ldap.ldapprovider": "ldap", "authentik_providers_radius.radiusprovider": "radius"}[model]
		return err == nil && s.providers[int32(n)] != nil && s.providers[int32(n)].kind == want
	case "authentik_outposts.outpost":
		return s.outposts[pk] != nil
	}
	return false
}
