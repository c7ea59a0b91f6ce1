package manifest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/synth"
	"github.com/nixmox/nixmox/pkg/graph"
	. "github.com/nixmox/nixmox/pkg/manifest"
)

// patched returns testdata/base.json with a JSON merge patch (RFC 7386)
// applied: objects merge, null deletes, anything else replaces.
func patched(t testing.TB, patch string) []byte {
	t.Helper()
	base, err := os.ReadFile("testdata/base.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc, p any
	if err := json.Unmarshal(base, &doc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(patch), &p); err != nil {
		t.Fatalf("bad patch %s: %v", patch, err)
	}
	out, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mergePatch(doc, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	dm, ok := doc.(map[string]any)
	if !ok {
		dm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(dm, k)
		} else {
			dm[k] = mergePatch(dm[k], v)
		}
	}
	return dm
}

func problems(t *testing.T, data []byte) []string {
	t.Helper()
	m, err := Parse(data, FormatJSON, "m.json")
	if m != nil {
		_, gerr := graph.New(m)
		err = Join("m.json", err, gerr)
	}
	if err == nil {
		return nil
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		return []string{"NOT A VALIDATION ERROR: " + err.Error()}
	}
	var out []string
	for _, d := range verr.Sorted() {
		out = append(out, d.String())
	}
	return out
}

func TestBaseIsValid(t *testing.T) {
	if got := problems(t, patched(t, `{}`)); got != nil {
		t.Fatalf("base manifest has problems:\n%s", strings.Join(got, "\n"))
	}
}

// TestBrokenManifests checks that each broken manifest is reported with
// exactly the expected problems: the path and the message of each.
func TestBrokenManifests(t *testing.T) {
	cases := []struct {
		name  string
		patch string
		want  []string
	}{
		{"unknown top-level field", `{"enable_rolback": false}`,
			[]string{`enable_rolback: unknown field "enable_rolback"; did you mean "enable_rollback"?`}},
		{"unknown nested field", `{"services": {"vaultwarden": {"interface": {"proxy": {"domain": null, "domian": "vault.lab.test"}}}}}`,
			[]string{
				`services.vaultwarden.interface.proxy.domain: is required`,
				`services.vaultwarden.interface.proxy.domian: unknown field "domian"; did you mean "domain"?`,
			}},
		{"string expected", `{"services": {"vaultwarden": {"ip": 42}}}`,
			[]string{`services.vaultwarden.ip: must be a string, not the number 42`, `services.vaultwarden.ip: is required`}},
		{"list expected", `{"services": {"vaultwarden": {"ports": "8080"}}}`,
			[]string{`services.vaultwarden.ports: must be a list, not the string "8080"`}},
		{"bool expected", `{"services": {"media": {"enable": "yes"}}}`,
			[]string{`services.media.enable: must be true or false, not the string "yes"`}},
		{"fractional number", `{"services": {"vaultwarden": {"vmid": 110.5}}}`,
			[]string{`services.vaultwarden.vmid: must be a whole number, not the number 110.5`}},
		{"enum value misspelt", `{"services": {"vaultwarden": {"interface": {"auth": {"type": "oidcc"}}}}}`,
			[]string{`services.vaultwarden.interface.auth.type: "oidcc" is not one of oidc, forward_auth, ldap, radius, none; did you mean "oidc"?`,
				`services.vaultwarden.interface.auth.oidc: oidc settings are given but type is "oidcc"`}},
		{"service name not a DNS label", `{"services": {"Vault_2": {"ip": "10.1.0.20", "hostname": "v2.lab.test"}}}`,
			[]string{`services.Vault_2: service name "Vault_2" is not a DNS label (lower-case letters, digits and inner hyphens, at most 63)`, `deployment_phases.services: service "Vault_2" is enabled but not listed`}},
		{"hostname not a DNS name", `{"services": {"vaultwarden": {"hostname": "vault warden.lab"}}}`,
			[]string{`services.vaultwarden.hostname: "vault warden.lab" is not a valid DNS name`}},
		{"IP invalid", `{"services": {"vaultwarden": {"ip": "10.1.0.300"}}}`,
			[]string{`services.vaultwarden.ip: "10.1.0.300" is not an IPv4 address`}},
		{"IP outside the network", `{"services": {"vaultwarden": {"ip": "10.2.0.5"}}}`,
			[]string{`services.vaultwarden.ip: 10.2.0.5 is outside network.network_cidr 10.1.0.0/24`}},
		{"IP is the broadcast address", `{"services": {"vaultwarden": {"ip": "10.1.0.255"}}}`,
			[]string{`services.vaultwarden.ip: 10.1.0.255 is the network's own network or broadcast address`}},
		{"duplicate IP", `{"services": {"vaultwarden": {"ip": "10.1.0.11"}}}`,
			[]string{`services.vaultwarden.ip: IP 10.1.0.11 is already used by services.media.ip`}},
		{"duplicate hostname, other case", `{"services": {"vaultwarden": {"hostname": "Media.lab.test"}}}`,
			[]string{`services.vaultwarden.hostname: hostname media.lab.test is already used by services.media.hostname`}},
		{"duplicate vmid", `{"core_services": {"caddy": {"vmid": 103}}}`,
			[]string{`core_services.postgresql.vmid: vmid 103 is already used by core_services.caddy.vmid`}},
		{"vmid out of range", `{"core_services": {"caddy": {"vmid": 99}}}`,
			[]string{`core_services.caddy.vmid: 99 is outside 100-999999999`}},
		{"duplicate proxy domain and path", `{"services": {"media": {"interface": {"proxy": {"jellyfin": {"domain": "vault.lab.test"}}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.domain: route vault.lab.test/ is already used by services.media.interface.proxy.jellyfin.domain`}},
		{"routes of one domain disagree on TLS", `{"services": {"media": {"interface": {"proxy": {"jellyfin": {"domain": "vault.lab.test", "path": "/media", "tls": false}}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.tls: is true, but services.media.interface.proxy.jellyfin.domain serves the same domain with tls = false`}},
		{"depends_on unknown service", `{"services": {"vaultwarden": {"depends_on": ["postgres"]}}}`,
			[]string{`services.vaultwarden.depends_on[0]: unknown service "postgres"; did you mean "postgresql"?`}},
		{"depends_on disabled service", `{"services": {"media": {"enable": false}, "vaultwarden": {"depends_on": ["media"]}}}`,
			[]string{`services.vaultwarden.depends_on[0]: "media" is disabled; enable it or remove the dependency`}},
		{"depends_on itself", `{"services": {"vaultwarden": {"depends_on": ["vaultwarden"]}}}`,
			[]string{`services.vaultwarden.depends_on[0]: a service cannot depend on itself`}},
		{"depends_on listed twice", `{"services": {"vaultwarden": {"depends_on": ["caddy", "caddy"]}}}`,
			[]string{`services.vaultwarden.depends_on[1]: "caddy" is listed twice`}},
		{"core service depends on application", `{"core_services": {"dns": {"depends_on": ["media"]}}}`,
			[]string{
				`core_services.dns.depends_on[0]: core service "dns" depends on "media" (depends_on), which is not a core service`,
				// dns → media → authentik (forward_auth upstream)
				`deployment_phases.nix_core[0]: "dns" is listed before "authentik", which it depends on`,
			}},
		{"core service uses an application's database", `{"core_services": {"dns": {"interface": {"db": {"name": "d", "host": "media"}}}}}`,
			[]string{
				`core_services.dns.interface.db.host: core service "dns" depends on "media" (database host), which is not a core service`,
				`deployment_phases.nix_core[0]: "dns" is listed before "authentik", which it depends on`,
			}},
		{"core service's route forwards auth to an application", `{"core_services": {"dns": {"interface": {"proxy": {"admin": {"domain": "dns.lab.test", "upstream": "localhost:5380", "auth": {"type": "forward_auth", "forward_auth_upstream": "media:9000"}}}}}}}`,
			[]string{
				`core_services.dns.interface.proxy.admin.auth.forward_auth_upstream: core service "dns" depends on "media" (forward_auth upstream), which is not a core service`,
				`deployment_phases.nix_core[0]: "dns" is listed before "authentik", which it depends on`,
			}},
		{"auth provider misspelt", `{"services": {"vaultwarden": {"interface": {"auth": {"provider": "authentic"}}}}}`,
			[]string{`services.vaultwarden.interface.auth.provider: no enabled service provides auth provider "authentic"; did you mean "authentik"?`}},
		{"auth provider not a core service", `{"services": {"vaultwarden": {"interface": {"auth": {"provider": "media"}}}}}`,
			[]string{`services.vaultwarden.interface.auth.provider: auth provider "media" must be a core service: its Terraform (tf:auth-core) runs before any application`}},
		{"oidc without redirect URIs", `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"redirect_uris": []}}}}}}`,
			[]string{`services.vaultwarden.interface.auth.oidc.redirect_uris: needs at least one redirect URI`}},
		{"redirect URI not absolute", `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"redirect_uris": ["vault.lab.test/cb"]}}}}}}`,
			[]string{`services.vaultwarden.interface.auth.oidc.redirect_uris[0]: "vault.lab.test/cb" must be an absolute http:// or https:// URL, or a native app's own scheme (com.example.app:/callback)`}},
		{"redirect URI with fragment", `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"redirect_uris": ["https://vault.lab.test/cb#x"]}}}}}}`,
			[]string{`services.vaultwarden.interface.auth.oidc.redirect_uris[0]: "https://vault.lab.test/cb#x" must not have a fragment (#...)`}},
		{"OIDC scope with shell characters", `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"scopes": ["openid $(id)"]}}}}}}`,
			[]string{`services.vaultwarden.interface.auth.oidc.scopes[0]: "openid $(id)" is not a scope name`}},
		{"db host nobody provides", `{"services": {"media": {"interface": {"dbs": {"sonarr": {"host": "10.1.0.99"}}}}}}`,
			[]string{`services.media.interface.dbs.sonarr.host: no enabled service has the address "10.1.0.99"`}},
		{"db name with a quote", `{"services": {"vaultwarden": {"interface": {"db": {"name": "vault'warden"}}}}}`,
			[]string{`services.vaultwarden.interface.db.name: "vault'warden" is not a database name (letters, digits, _ and -, at most 63, not starting with a digit)`}},
		{"database declared twice on one host", `{"services": {"media": {"interface": {"dbs": {"sonarr": {"additionaldbs": ["vaultwarden"]}}}}}}`,
			[]string{`services.vaultwarden.interface.db.name: database "vaultwarden" on postgresql is already used by services.media.interface.dbs.sonarr.name`}},
		{"forward_auth upstream nobody provides", `{"services": {"media": {"interface": {"proxy": {"sonarr": {"auth": {"forward_auth_upstream": "10.1.0.77:9000"}}}}}}}`,
			[]string{`services.media.interface.proxy.sonarr.auth.forward_auth_upstream: no enabled service has the address "10.1.0.77"`}},
		{"upstream without port", `{"services": {"vaultwarden": {"interface": {"proxy": {"upstream": "localhost"}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.upstream: "localhost" is not host:port`}},
		{"upstream port out of range", `{"services": {"media": {"interface": {"proxy": {"jellyfin": {"upstream": "localhost:70000"}}}}}}`,
			[]string{`services.media.interface.proxy.jellyfin.upstream: "localhost:70000" has a port outside 1-65535`}},
		{"route path with spaces", `{"services": {"vaultwarden": {"interface": {"proxy": {"path": "/a b"}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.path: "/a b" must start with / and hold only letters, digits and . _ ~ % / -`}},
		{"header value with newline", `{"services": {"vaultwarden": {"interface": {"proxy": {"headers": {"X-A": "ok\nevil"}}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.headers.X-A: value must not contain control characters or newlines`}},
		{"header value Caddy cannot quote", `{"services": {"vaultwarden": {"interface": {"proxy": {"headers": {"X-A": "tick` + "`" + ` and \\\"quote"}}}}}}`,
			[]string{`services.vaultwarden.interface.proxy.headers.X-A: a value with a backtick cannot also have a backslash before a quote or at its end`}},
		{"reverse proxy missing", `{"network": {"reverse_proxy": "traefik"}}`,
			[]string{
				`core_services.authentik.interface.proxy: needs the reverse proxy "traefik", which is not an enabled service (set network.reverse_proxy)`,
				`services.media.interface.proxy: needs the reverse proxy "traefik", which is not an enabled service (set network.reverse_proxy)`,
				`services.vaultwarden.interface.proxy: needs the reverse proxy "traefik", which is not an enabled service (set network.reverse_proxy)`,
			}},
		{"health numbers out of range", `{"services": {"vaultwarden": {"interface": {"health": {"interval": 0, "retries": 101}}}}}`,
			[]string{`services.vaultwarden.interface.health.interval: 0 is outside 1-86400`, `services.vaultwarden.interface.health.retries: 101 is outside 0-100`}},
		{"health without a check", `{"services": {"vaultwarden": {"interface": {"health": {"liveness": null, "interval": 10}}}}}`,
			[]string{`services.vaultwarden.interface.health: needs at least one of startup, liveness, readiness`}},
		{"network CIDR with host bits", `{"network": {"network_cidr": "10.1.0.7/24"}}`,
			[]string{`network.network_cidr: "10.1.0.7/24" has host bits set; did you mean "10.1.0.0/24"?`}},
		{"gateway outside the network", `{"network": {"gateway": "192.0.2.1"}}`,
			[]string{`network.gateway: 192.0.2.1 is outside network.network_cidr 10.1.0.0/24`}},
		{"VLAN tag out of range", `{"network": {"vlan_tag": 5000}}`,
			[]string{`network.vlan_tag: 5000 is outside 1-4094 (0 for none)`}},
		{"SSH key over two lines", `{"network": {"ssh_keys": {"root": ["ssh-ed25519 AAAA\nssh-rsa BBBB"]}}}`,
			[]string{`network.ssh_keys.root[0]: is not an SSH public key on one line ("ssh-ed25519 AAAA... comment")`}},
		{"ldap auth without an LDAP outpost", `{"services": {"vaultwarden": {"interface": {"auth": {"type": "ldap", "oidc": null}}}}}`,
			[]string{`services.vaultwarden.interface.auth.type: auth type "ldap" needs network.outposts.ldap`}},
		{"LDAP outpost run by the auth provider", `{"network": {"outposts": {"ldap": {"base_dn": "dc=lab,dc=test", "service": "authentik"}}}}`,
			[]string{`network.outposts.ldap.service: "authentik" is the auth provider: its system is built before tf:auth-core makes the outpost's token; name another service (it may run the outpost beside an application)`}},
		{"RADIUS outpost run by nobody known", `{"network": {"outposts": {"radius": {"client_networks": ["10.1.0.0/24"], "service": "vaultwarde"}}}}`,
			[]string{`network.outposts.radius.service: no enabled service is called "vaultwarde"; did you mean "vaultwarden"?`}},
		{"two client ids for one client", `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"client_id": "vw"}}, "terraform": {"modules": [], "variables": {"oidc_client_id": "vaultwarden-oidc"}}}}}}`,
			[]string{`services.vaultwarden.interface.terraform.variables.oidc_client_id: vaultwarden-oidc differs from services.vaultwarden.interface.auth.oidc.client_id ("vw"): a client has one id; drop one of them`}},
		{"service in both sections", `{"services": {"caddy": {"ip": "10.1.0.30", "hostname": "c2.lab.test"}}}`,
			[]string{`services.caddy: service "caddy" is also defined in core_services`}},
		{"service that is not an object", `{"services": {"ghost": "x"}}`,
			[]string{`services.ghost: must be an object, not the string "x"`}},
		{"null service is absent", `{"services": {"media": null, "vaultwarden": {"interface": {"dbs": {"x": null}}}}, "deployment_phases": {"services": ["vaultwarden"]}}`,
			nil},
		{"dependency cycle of two", `{"core_services": {"dns": {"depends_on": ["caddy"]}, "caddy": {"depends_on": ["dns"]}}}`,
			[]string{`core_services.caddy.depends_on[0]: dependency cycle: caddy → dns → caddy`}},
		{"dependency cycle through an implicit edge", `{"core_services": {"postgresql": {"depends_on": ["authentik"]}}}`,
			[]string{`core_services.authentik.depends_on[0]: dependency cycle: authentik → postgresql → authentik`}},
		{"deployment_phases names an unknown service", `{"deployment_phases": {"services": ["vaultwarden", "media", "nextclod"]}}`,
			[]string{`deployment_phases.services[2]: unknown service "nextclod"`}},
		{"deployment_phases contradicts the graph", `{"deployment_phases": {"nix_core": ["dns", "authentik", "postgresql", "caddy"]}}`,
			// authentik needs caddy (reverse proxy) and postgresql; caddy is listed last.
			[]string{`deployment_phases.nix_core[1]: "authentik" is listed before "caddy", which it depends on`}},
		{"deployment_phases puts a core service among services", `{"deployment_phases": {"services": ["vaultwarden", "media", "dns"]}}`,
			[]string{`deployment_phases.services[2]: "dns" is a core service; list it under nix_core`}},
		{"deployment_phases leaves a service out", `{"deployment_phases": {"services": ["vaultwarden"]}}`,
			[]string{`deployment_phases.services: service "media" is enabled but not listed`}},
		{"global numbers out of range", `{"retry_attempts": -1, "health_check_timeout": 0}`,
			[]string{`health_check_timeout: 0 is outside 1-86400`, `retry_attempts: -1 is outside 0-100`}},
		{"root is not an object", `[1]`,
			[]string{`must be an object (an attribute set), not a list`}},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := patched(t, tc.patch)
			got := problems(t, data)
			sort.Strings(got)
			want := append([]string(nil), tc.want...)
			sort.Strings(want)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("problems:\n  got:  %s\n  want: %s", strings.Join(got, "\n        "), strings.Join(want, "\n        "))
			}
		})
	}
}

// largeManifest is the synthetic manifest of 3,000 services with field set
// to value in each of the named applications.
func largeManifest(t *testing.T, field string, value any, apps ...string) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(synth.JSON(3000), &doc); err != nil {
		t.Fatal(err)
	}
	for _, name := range apps {
		doc["services"].(map[string]any)[name].(map[string]any)[field] = value
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestLargeManifestReportsEverywhere: a manifest large enough to be
// validated on several cores still reports every problem, wherever it is.
func TestLargeManifestReportsEverywhere(t *testing.T) {
	data := largeManifest(t, "depends_on", []any{"postgress"}, "app5", "app1500", "app2999")
	got := problems(t, data)
	want := []string{
		`services.app1500.depends_on[0]: unknown service "postgress"; did you mean "postgresql"?`,
		`services.app2999.depends_on[0]: unknown service "postgress"; did you mean "postgresql"?`,
		`services.app5.depends_on[0]: unknown service "postgress"; did you mean "postgresql"?`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s", strings.Join(got, "\n"))
	}
}

// TestLargeManifestDecodesAlike: however many cores decode a large
// manifest, it decodes to the same problems, and a duplicate key is
// reported where it first occurs in the input.
func TestLargeManifestDecodesAlike(t *testing.T) {
	data := largeManifest(t, "prots", []any{80}, "app7", "app1777", "app2998")
	// Two services, one early and one late, each with "ip" given twice.
	dup := string(data)
	for _, name := range []string{"app2000", "app1000"} {
		i := strings.Index(dup, `"`+name+`":{`) + len(name) + 4
		dup = dup[:i] + `"ip":"10.64.0.9",` + dup[i:]
	}
	// The inserted "ip" comes first in app1000's object; the synth's own,
	// later, is the duplicate.
	obj := strings.Index(dup, `"app1000":{`) + len(`"app1000":{"ip":"10.64.0.9",`)
	second := obj + strings.Index(dup[obj:], `"ip":`)
	wantDup := fmt.Sprintf(`x.json: invalid JSON at line 1, column %d: duplicate key "ip"`, second+1)
	var ref []string
	for _, procs := range []int{1, 2, 3, 8} {
		old := runtime.GOMAXPROCS(procs)
		got := problems(t, data)
		_, err := Parse([]byte(dup), FormatJSON, "x.json")
		runtime.GOMAXPROCS(old)
		if len(got) != 3 || ref != nil && !slices.Equal(got, ref) {
			t.Errorf("GOMAXPROCS=%d: problems %q, want 3 as with 1 core: %q", procs, got, ref)
		}
		ref = got
		if err == nil || err.Error() != wantDup {
			t.Errorf("GOMAXPROCS=%d: error %v\nwant %s", procs, err, wantDup)
		}
	}
}

// TestNativeAppRedirectURIs (issue #16, finding 9): OAuth for native apps
// (RFC 8252 §7.1) redirects to private-use URI schemes, which Authentik
// accepts; they are accepted, while schemes that run code or carry data
// (javascript:, data:, ...) and fragments are refused.
func TestNativeAppRedirectURIs(t *testing.T) {
	uri := func(u string) []string {
		data, _ := json.Marshal(u)
		return problems(t, patched(t, `{"services": {"vaultwarden": {"interface": {"auth": {"oidc": {"redirect_uris": [`+string(data)+`]}}}}}}`))
	}
	for _, ok := range []string{"com.example.app:/oauth2redirect", "nativeapp:///callback", "https://vault.lab.test/cb", "org.nixmox.ios:/cb?x=1"} {
		if got := uri(ok); got != nil {
			t.Errorf("%s refused: %v", ok, got)
		}
	}
	for bad, want := range map[string]string{
		"javascript:alert(1)":      "javascript: is not a redirect URI scheme",
		"data:text/html,x":         "data: is not a redirect URI scheme",
		"com.example.app:/cb#frag": "must not have a fragment",
		"1app:/cb":                 "must be an absolute http:// or https:// URL, or a native app's own scheme",
		"com.example.app:":         "has no path after its scheme",
	} {
		got := uri(bad)
		if len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("%s: %v, want %q", bad, got, want)
		}
	}
}
