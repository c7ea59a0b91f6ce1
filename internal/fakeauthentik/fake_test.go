package fakeauthentik

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// call sends one request to the fake and returns the status and body.
func call(t *testing.T, s *Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+"/api/v3"+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func mustCreate(t *testing.T, s *Server, path, body string) map[string]any {
	t.Helper()
	code, out := call(t, s, http.MethodPost, path, body)
	if code != http.StatusCreated {
		t.Fatalf("POST %s %s: %d %s", path, body, code, out)
	}
	var o map[string]any
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestFakeRefusesWhatAuthentikRefuses: each request below is one Authentik
// refuses (its serializers' and models' rules, its OpenAPI schema's
// required fields and enums); the fake must answer 400 with DRF's message
// for the field, and nothing may change.
func TestFakeRefusesWhatAuthentikRefuses(t *testing.T) {
	s := New("t")
	defer s.Close()
	flow := s.FlowPK("default-provider-authorization-implicit-consent")
	inval := s.FlowPK("default-provider-invalidation-flow")
	p := mustCreate(t, s, "/providers/proxy/", `{"name": "web", "authorization_flow": "`+flow+`", "invalidation_flow": "`+inval+`", "external_host": "https://web.lab", "mode": "forward_single"}`)
	mustCreate(t, s, "/core/applications/", `{"name": "Web", "slug": "web", "provider": `+jsonNum(p["pk"])+`}`)
	ldap := mustCreate(t, s, "/providers/ldap/", `{"name": "dir", "authorization_flow": "`+flow+`", "invalidation_flow": "`+inval+`"}`)
	providers, apps, outposts := s.Count("provider"), s.Count("application"), s.Count("outpost")

	for _, c := range []struct{ name, method, path, body, want string }{
		{"provider name taken (by another kind)", "POST", "/providers/oauth2/", `{"name": "web", "authorization_flow": "` + flow + `", "invalidation_flow": "` + inval + `", "redirect_uris": []}`,
			`{"name":["provider with this name already exists."]}`},
		{"required field missing", "POST", "/providers/oauth2/", `{"name": "x", "invalidation_flow": "` + inval + `", "redirect_uris": []}`,
			`{"authorization_flow":["This field is required."]}`},
		{"redirect URI without matching mode", "POST", "/providers/oauth2/", `{"name": "x", "authorization_flow": "` + flow + `", "invalidation_flow": "` + inval + `", "redirect_uris": [{"url": "https://x"}]}`,
			`{"matching_mode":["This field is required."]}`},
		{"flow that does not exist", "POST", "/providers/oauth2/", `{"name": "x", "authorization_flow": "00000000-0000-4000-8000-000000000000", "invalidation_flow": "` + inval + `", "redirect_uris": []}`,
			`does not exist`},
		{"enum value Authentik does not have", "POST", "/providers/oauth2/", `{"name": "x", "authorization_flow": "` + flow + `", "invalidation_flow": "` + inval + `", "redirect_uris": [], "client_type": "secret"}`,
			`ClientTypeEnum`},
		{"application slug taken", "POST", "/core/applications/", `{"name": "Other", "slug": "web"}`,
			`{"slug":["application with this slug already exists."]}`},
		{"application slug with a dot", "POST", "/core/applications/", `{"name": "Other", "slug": "we.b"}`,
			`consisting of letters, numbers, underscores or hyphens`},
		{"provider already used by an application", "POST", "/core/applications/", `{"name": "Other", "slug": "other", "provider": ` + jsonNum(p["pk"]) + `}`,
			`{"provider":["application with this provider already exists."]}`},
		{"outpost of the wrong type for its provider", "POST", "/outposts/instances/", `{"name": "o", "type": "ldap", "providers": [` + jsonNum(p["pk"]) + `], "config": {}}`,
			`Outpost type ldap can't be used with Proxy Provider providers.`},
		{"outpost without providers", "POST", "/outposts/instances/", `{"name": "o", "type": "ldap", "providers": [], "config": {}}`,
			`{"providers":["This list may not be empty."]}`},
		{"outpost name taken", "POST", "/outposts/instances/", `{"name": "` + EmbeddedOutpost + `", "type": "ldap", "providers": [` + jsonNum(ldap["pk"]) + `], "config": {}}`,
			`{"name":["outpost with this name already exists."]}`},
		{"token of another intent", "POST", "/core/tokens/", `{"identifier": "x", "intent": "recovery"}`,
			`{"intent":["Invalid intent recovery"]}`},
		{"permissions of a role that does not exist", "POST", "/rbac/permissions/assigned_by_roles/nope/assign/", `{"permissions": ["authentik_providers_ldap.search_full_directory"]}`,
			`No matching object found.`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out := call(t, s, c.method, c.path, c.body)
			if code/100 != 4 || !strings.Contains(out, c.want) {
				t.Errorf("%s %s: %d %s, want 4xx with %s", c.method, c.path, code, out, c.want)
			}
		})
	}
	if s.Count("provider") != providers || s.Count("application") != apps || s.Count("outpost") != outposts {
		t.Error("a refused request changed the fake's objects")
	}
	if code, _ := call(t, s, "PATCH", "/outposts/instances/"+s.Object("outpost", EmbeddedOutpost)["pk"].(string)+"/", `{"providers": []}`); code != http.StatusOK {
		t.Errorf("emptying the embedded outpost: %d, want 200 (it may serve no provider)", code)
	}
	req, _ := http.NewRequest("GET", s.URL()+"/api/v3/root/config/", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a request without the token: %v %v, want 403", resp.StatusCode, err)
	}
}

// TestFakeFillsInWhatAuthentikFillsIn: what the server decides itself.
func TestFakeFillsInWhatAuthentikFillsIn(t *testing.T) {
	s := New("t")
	defer s.Close()
	flow := s.FlowPK("default-provider-authorization-implicit-consent")
	inval := s.FlowPK("default-provider-invalidation-flow")
	p := mustCreate(t, s, "/providers/oauth2/", `{"name": "x", "authorization_flow": "`+flow+`", "invalidation_flow": "`+inval+`", "redirect_uris": [{"matching_mode": "strict", "url": "https://x/cb"}]}`)
	uris := p["redirect_uris"].([]any)
	if uris[0].(map[string]any)["redirect_uri_type"] != "authorization" {
		t.Errorf("redirect URI stored as %v, want redirect_uri_type authorization", uris[0])
	}
	if sec, _ := p["client_secret"].(string); len(sec) < 64 {
		t.Errorf("client secret %q: want one generated", sec)
	}
	// An update sets what it sends and keeps what it leaves out.
	code, out := call(t, s, "PUT", "/providers/oauth2/"+jsonNum(p["pk"])+"/", `{"name": "x", "authorization_flow": "`+flow+`", "invalidation_flow": "`+inval+`", "redirect_uris": [], "client_id": "renamed"}`)
	var updated map[string]any
	if err := json.Unmarshal([]byte(out), &updated); code != http.StatusOK || err != nil ||
		updated["client_id"] != "renamed" || updated["client_secret"] != p["client_secret"] || updated["pk"] != p["pk"] {
		t.Errorf("PUT: %d %s: want the new client id, the same secret and pk", code, out)
	}
	o := mustCreate(t, s, "/outposts/instances/", `{"name": "l", "type": "ldap", "providers": [`+jsonNum(mustCreate(t, s, "/providers/ldap/", `{"name": "d", "authorization_flow": "`+flow+`", "invalidation_flow": "`+inval+`"}`)["pk"])+`], "config": {}}`)
	account := s.Object("user", "ak-outpost-"+strings.ReplaceAll(o["pk"].(string), "-", ""))
	if account == nil || account["type"] != "internal_service_account" {
		t.Errorf("the outpost's service account: %v", account)
	}
	if s.TokenKey("ak-outpost-"+o["pk"].(string)+"-api") == "" {
		t.Error("the outpost has no managed token")
	}
}

func jsonNum(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}
