// Package fakeauthentik is a stand-in for Authentik's REST API (/api/v3),
// for running the real goauthentik/authentik Terraform provider against
// something that enforces what Authentik enforces, where Authentik itself
// (a Python server with PostgreSQL and its workers) cannot run.
//
// What it is built from:
//   - every request body is decoded into the request model of Authentik's
//     own generated API client (goauthentik.io/api/v3, generated from
//     Authentik's OpenAPI schema): a missing required field or a value
//     outside an enum is refused as Authentik refuses it (400, the field
//     named); every response is checked against the response model the
//     same way before it is sent, so the fake cannot answer what the
//     provider could not read from the real server;
//   - the rules of Authentik's models and serializers (authentik/*/models.py,
//     */api/*.py): provider names, application slugs, outpost names,
//     usernames, token identifiers, role names and OAuth2 client ids are
//     unique; an application's provider belongs to one application; slugs
//     and identifiers are [-a-zA-Z0-9_]+; flows, scope mappings, certificate
//     key pairs, users, roles and providers referred to must exist; an
//     outpost's providers must match its type and may not be empty unless
//     it is the embedded outpost; tokens are only of intent api or
//     app_password;
//   - the values the server fills in: pks and uuids, OAuth2 client secrets,
//     a redirect URI's redirect_uri_type ("authorization"), grant types,
//     token keys and an API token's expiry, an outpost's service account
//     (ak-outpost-<uuid hex>) and managed token (ak-outpost-<uuid>-api);
//   - what a fresh Authentik has: the default flows, the managed OAuth2
//     scope mappings (blueprints/system/providers-oauth2.yaml), the
//     "authentik Self-signed Certificate" key pair, the embedded outpost
//     and akadmin.
//
// What it cannot show: flows that actually run (logins, consent, LDAP
// binds), policies, permissions beyond the role assignments recorded here,
// the outposts connecting, and every other endpoint of the API (answered
// 404 and recorded, so a test sees that something unexpected was asked).
package fakeauthentik

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Names of what a fresh Authentik has.
const (
	EmbeddedOutpost = "authentik Embedded Outpost"
	SelfSigned      = "authentik Self-signed Certificate"
	embeddedManaged = "goauthentik.io/outposts/embedded"
)

// Request is one request the fake served.
type Request struct {
	Method, Path, Query string
	Status              int
}

// Server is the fake. Its zero value is not usable; use New.
type Server struct {
	// Token is the API token requests must carry (Authorization: Bearer).
	Token string
	// OutpostReadHold delays the answer to reading one outpost, so that
	// read-modify-write sequences made in parallel by the provider
	// (outpost provider attachments) overlap as they do against a real,
	// slower server. Zero answers at once.
	OutpostReadHold time.Duration

	mu        sync.Mutex
	srv       *httptest.Server
	nextPK    int32
	requests  []Request
	flows     []obj
	scopes    []obj
	keypairs  []obj
	keys      map[string]string // key pair pk -> private key
	outposts  map[string]obj
	providers map[int32]*provider
	apps      map[string]obj
	users     map[int32]obj
	tokens    map[string]obj
	tokenKeys map[string]string
	roles     map[string]obj
	perms     []perm
}

type obj = map[string]any

type provider struct {
	kind string // oauth2, proxy, ldap, radius
	o    obj
}

type perm struct {
	id                              int32
	role, app, codename, model, opk string
}

// permissions Authentik has that the fake knows: app_label.codename ->
// app_label.model.
var permissions = map[string]string{
	"authentik_providers_ldap.search_full_directory": "authentik_providers_ldap.ldapprovider",
	"authentik_providers_ldap.view_ldapprovider":     "authentik_providers_ldap.ldapprovider",
	"authentik_providers_radius.view_radiusprovider": "authentik_providers_radius.radiusprovider",
	"authentik_outposts.view_outpost":                "authentik_outposts.outpost",
	"authentik_core.view_application":                "authentik_core.application",
}

// New starts the fake on a loopback port, seeded like a fresh Authentik.
func New(token string) *Server {
	s := &Server{Token: token, nextPK: 1, keys: map[string]string{}, outposts: map[string]obj{},
		providers: map[int32]*provider{}, apps: map[string]obj{}, users: map[int32]obj{},
		tokens: map[string]obj{}, tokenKeys: map[string]string{}, roles: map[string]obj{}}
	s.seed()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the fake's base URL (what the provider's url setting takes).
func (s *Server) URL() string { return s.srv.URL }

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// Requests returns the requests served so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// PrivateKey is the self-signed key pair's private key, for checking that
// it went nowhere.
func (s *Server) PrivateKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kp := range s.keypairs {
		if kp["name"] == SelfSigned {
			return s.keys[kp["pk"].(string)]
		}
	}
	return ""
}

// EmbeddedProviders returns the names of the providers bound to the
// embedded outpost.
func (s *Server) EmbeddedProviders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.outposts {
		if o["managed"] == embeddedManaged {
			var names []string
			for _, pk := range o["providers"].([]int32) {
				names = append(names, s.providers[pk].o["name"].(string))
			}
			slices.Sort(names)
			return names
		}
	}
	return nil
}

// AttachForeignProxy makes a proxy provider and binds it to the embedded
// outpost, as someone using Authentik's UI besides nixmox would; it
// returns the provider's name.
func (s *Server) AttachForeignProxy(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var flow string
	for _, f := range s.flows {
		if f["slug"] == "default-provider-authorization-implicit-consent" {
			flow = f["pk"].(string)
		}
	}
	o := providerMeta["proxy"].defaults()
	o["name"], o["authorization_flow"], o["invalidation_flow"] = name, flow, flow
	o["external_host"], o["mode"] = "https://"+name+".example", "forward_single"
	o["authentication_flow"], o["property_mappings"] = nil, []string{}
	o["pk"] = s.pk()
	s.providers[o["pk"].(int32)] = &provider{kind: "proxy", o: o}
	for _, out := range s.outposts {
		if out["managed"] == embeddedManaged {
			out["providers"] = append(ints(out["providers"]), o["pk"].(int32))
		}
	}
	return name
}

// TokenKey is the key of the token with that identifier ("" if none).
func (s *Server) TokenKey(identifier string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens[identifier] == nil {
		return ""
	}
	return s.tokenKeys[identifier]
}

// FlowPK is the pk of the flow with that slug.
func (s *Server) FlowPK(slug string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.flows {
		if f["slug"] == slug {
			return f["pk"].(string)
		}
	}
	return ""
}

// KeyPairPK is the pk of the certificate key pair with that name.
func (s *Server) KeyPairPK(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kp := range s.keypairs {
		if kp["name"] == name {
			return kp["pk"].(string)
		}
	}
	return ""
}

// Count returns how many objects of a kind exist: "provider", "application",
// "outpost", "user", "token", "role".
func (s *Server) Count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kind {
	case "provider":
		return len(s.providers)
	case "application":
		return len(s.apps)
	case "outpost":
		return len(s.outposts)
	case "user":
		return len(s.users)
	case "token":
		return len(s.tokens)
	case "role":
		return len(s.roles)
	}
	panic("fakeauthentik: unknown kind " + kind)
}

// Object returns a copy of the object of a kind with the given name (slug
// for applications, username for users, identifier for tokens), or nil.
func (s *Server) Object(kind, name string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found obj
	switch kind {
	case "provider":
		for _, p := range s.providers {
			if p.o["name"] == name {
				found = p.o
			}
		}
	case "application":
		found = s.apps[name]
	case "outpost":
		for _, o := range s.outposts {
			if o["name"] == name {
				found = o
			}
		}
	case "user":
		for _, u := range s.users {
			if u["username"] == name {
				found = u
			}
		}
	case "token":
		found = s.tokens[name]
	case "role":
		for _, r := range s.roles {
			if r["name"] == name {
				found = r
			}
		}
	}
	if found == nil {
		return nil
	}
	var out map[string]any
	data, _ := json.Marshal(found)
	_ = json.Unmarshal(data, &out)
	return out
}

// RolePermissions lists a role's permissions as "app_label.codename@object_pk".
func (s *Server) RolePermissions(roleName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.perms {
		if r := s.roles[p.role]; r != nil && r["name"] == roleName {
			out = append(out, p.app+"."+p.codename+"@"+p.opk)
		}
	}
	slices.Sort(out)
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Server) pk() int32 { s.nextPK++; return s.nextPK - 1 }

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (s *Server) seed() {
	for _, f := range []struct{ slug, designation string }{
		{"default-authentication-flow", "authentication"},
		{"default-invalidation-flow", "invalidation"},
		{"default-provider-authorization-implicit-consent", "authorization"},
		{"default-provider-authorization-explicit-consent", "authorization"},
		{"default-provider-invalidation-flow", "invalidation"},
	} {
		pk := newUUID()
		s.flows = append(s.flows, obj{"pk": pk, "policybindingmodel_ptr_id": pk, "name": f.slug, "slug": f.slug,
			"title": f.slug, "designation": f.designation, "background_url": "/static/dist/assets/images/flow_background.jpg",
			"background_themed_urls": nil, "stages": []string{}, "policies": []string{}, "cache_count": 0,
			"export_url": "/api/v3/flows/instances/" + f.slug + "/export/", "authentication": "none"})
	}
	for _, sc := range []struct{ managed, scope string }{
		{"scope-openid", "openid"}, {"scope-email", "email"}, {"scope-profile", "profile"},
		{"scope-entitlements", "entitlements"}, {"scope-offline_access", "offline_access"},
		{"scope-authentik_api", "goauthentik.io/api"},
	} {
		s.scopes = append(s.scopes, obj{"pk": newUUID(), "managed": "goauthentik.io/providers/oauth2/" + sc.managed,
			"name": "authentik default OAuth Mapping: " + sc.scope, "expression": "return {}",
			"component": "ak-property-mapping-provider-scope-form", "verbose_name": "Scope Mapping",
			"verbose_name_plural": "Scope Mappings", "meta_model_name": "authentik_providers_oauth2.scopemapping",
			"scope_name": sc.scope, "description": ""})
	}
	kp := newUUID()
	s.keypairs = append(s.keypairs, obj{"pk": kp, "name": SelfSigned, "fingerprint_sha256": randomHex(32),
		"fingerprint_sha1": randomHex(20), "cert_expiry": time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339),
		"cert_subject": "OU=Self-signed,O=authentik,CN=authentik Self-signed Certificate", "private_key_available": true,
		"key_type": "rsa", "certificate_download_url": "/api/v3/crypto/certificatekeypairs/" + kp + "/view_certificate/?download",
		"private_key_download_url": "/api/v3/crypto/certificatekeypairs/" + kp + "/view_private_key/?download", "managed": nil})
	s.keys[kp] = "-----BEGIN PRIVATE KEY-----\nFAKE" + randomHex(64) + "\n-----END PRIVATE KEY-----"
	s.newUser(obj{"username": "akadmin", "name": "authentik Default Admin", "type": "internal", "path": "users"}, true)
	id := newUUID()
	s.outposts[id] = obj{"pk": id, "name": EmbeddedOutpost, "type": "proxy", "providers": []int32{},
		"service_connection": nil, "config": defaultOutpostConfig(), "managed": embeddedManaged}
	s.outpostAccount(id)
}

func defaultOutpostConfig() obj {
	return obj{"authentik_host": "http://localhost:9000/", "authentik_host_insecure": false, "authentik_host_browser": "",
		"log_level": "info", "object_naming_template": "ak-outpost-%(name)s", "refresh_interval": "minutes=5"}
}

// outpostAccount makes an outpost's service account and managed token, as
// Outpost.user and Outpost.token do.
func (s *Server) outpostAccount(id string) {
	u := s.newUser(obj{"username": "ak-outpost-" + strings.ReplaceAll(id, "-", ""),
		"name": "Outpost " + s.outposts[id]["name"].(string) + " Service-Account", "type": "internal_service_account",
		"path": "goauthentik.io/outposts"}, false)
	ident := "ak-outpost-" + id + "-api"
	s.tokens[ident] = obj{"pk": newUUID(), "managed": "goauthentik.io/outpost/" + ident, "identifier": ident,
		"intent": "api", "user": u["pk"], "description": "Autogenerated by authentik for Outpost", "expires": nil, "expiring": false}
	s.tokenKeys[ident] = randomHex(30)
}

func (s *Server) newUser(u obj, superuser bool) obj {
	pk := s.pk()
	u["pk"] = pk
	u["uuid"] = newUUID()
	u["uid"] = randomHex(32)
	u["is_superuser"] = superuser
	u["date_joined"], u["password_change_date"], u["last_updated"] = now(), now(), now()
	u["avatar"] = "data:image/svg+xml;base64,"
	u["last_login"] = nil
	for k, v := range (obj{"is_active": true, "groups": []string{}, "roles": []string{}, "email": "", "attributes": obj{}, "type": "internal", "path": "users"}) {
		if _, ok := u[k]; !ok {
			u[k] = v
		}
	}
	s.users[pk] = u
	return u
}
