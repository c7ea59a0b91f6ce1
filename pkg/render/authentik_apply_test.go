package render_test

// The generated auth-core root applied by the real goauthentik/authentik
// provider (2026.5.0, from ../shared/terraform-plugins) against
// internal/fakeauthentik, a fake of Authentik's API: Authentik itself
// cannot run here. What the fake enforces and cannot show is in its
// package comment and docs/terraform.md.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/fakeauthentik"
	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/pkg/render"
)

const fakeToken = "nixmox-test-token"

// authentikPlugins unpacks the real provider into a plugin directory, or
// skips the test (a clone without ../shared) with the reason.
func authentikPlugins(t *testing.T) string {
	t.Helper()
	need(t, "terraform", "tar", "xz")
	archive := fixtures.Shared(t, "terraform-plugins/terraform-provider-authentik_2026.5.0_linux_amd64.tar.xz")
	dir := t.TempDir()
	run(t, dir, "tar", "-xJf", archive, "-C", dir)
	return dir
}

// authCoreRun is one auth-core root in a directory of its own, run against
// a fake Authentik.
type authCoreRun struct {
	t       *testing.T
	dir     string
	plugins string
	fake    *fakeauthentik.Server
	// byHand applies with Terraform's default parallelism, as someone
	// applying the generated root by hand would; nixmox-server applies
	// tf:auth-core with -parallelism=1.
	byHand bool
}

func newAuthCoreRun(t *testing.T, plugins string, fake *fakeauthentik.Server) *authCoreRun {
	return &authCoreRun{t: t, dir: filepath.Join(t.TempDir(), "auth-core"), plugins: plugins, fake: fake}
}

// write replaces the root's files with the rendered tree's auth-core (the
// state and .terraform stay, as in the server's working directory).
func (a *authCoreRun) write(tree render.Tree) {
	a.t.Helper()
	for _, sub := range []string{"main.tf.json", "modules", "nixmox-outputs.json"} {
		_ = os.RemoveAll(filepath.Join(a.dir, sub))
	}
	n := 0
	for p, data := range tree {
		rel, ok := strings.CutPrefix(p, "terraform/auth-core/")
		if !ok {
			continue
		}
		n++
		if rel == "main.tf.json" {
			data = a.withoutMissingModules(data)
		}
		dst := filepath.Join(a.dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			a.t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			a.t.Fatal(err)
		}
	}
	if n == 0 {
		a.t.Fatal("the tree has no terraform/auth-core")
	}
}

// withoutMissingModules drops the calls of user modules that are not on
// disk (the shared fixtures come without their modules), and the outputs
// re-exported from them: they are the user's, not what is tested here.
func (a *authCoreRun) withoutMissingModules(data []byte) []byte {
	a.t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		a.t.Fatal(err)
	}
	mods, _ := doc["module"].(map[string]any)
	for name, m := range mods {
		src, _ := m.(map[string]any)["source"].(string)
		if strings.HasPrefix(src, "./modules/") {
			continue
		}
		if _, err := os.Stat(filepath.Join(a.dir, src)); err == nil {
			continue
		}
		a.t.Logf("module %s (%s) is not on disk: left out", name, src)
		delete(mods, name)
		outs, _ := doc["output"].(map[string]any)
		for o, v := range outs {
			if strings.Contains(v.(map[string]any)["value"].(string), "module."+name+".") {
				delete(outs, o)
			}
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		a.t.Fatal(err)
	}
	return out
}

// tf runs terraform in the root and returns its output and exit code.
func (a *authCoreRun) tf(args ...string) (string, int) {
	a.t.Helper()
	cmd := exec.Command("terraform", args...)
	cmd.Dir = a.dir
	cmd.Env = append(os.Environ(), "TF_IN_AUTOMATION=1", "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1",
		"TF_VAR_authentik_url="+a.fake.URL(), "TF_VAR_authentik_token="+fakeToken,
		"TF_VAR_radius_shared_secret=radius-test-secret")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		a.t.Fatalf("terraform %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// must runs terraform and fails the test unless it exits 0.
func (a *authCoreRun) must(args ...string) string {
	a.t.Helper()
	out, code := a.tf(args...)
	if code != 0 {
		a.t.Fatalf("terraform %s exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// applyAndConverge initialises, validates and applies the root (one
// operation at a time, as nixmox-server does, unless byHand), then asks
// for a plan that must show no changes.
func (a *authCoreRun) applyAndConverge() {
	a.t.Helper()
	a.must("init", "-plugin-dir="+a.plugins, "-input=false", "-no-color")
	a.must("validate", "-no-color")
	args := []string{"apply", "-auto-approve", "-input=false", "-no-color"}
	if !a.byHand {
		args = append(args, "-parallelism=1")
	}
	a.must(args...)
	if out, code := a.tf("plan", "-detailed-exitcode", "-input=false", "-no-color"); code != 0 {
		a.t.Fatalf("the plan after apply is not empty (exit %d):\n%s", code, out)
	}
}

// outputs reads the root's outputs, sensitive ones included.
func (a *authCoreRun) outputs() map[string]any {
	a.t.Helper()
	var raw map[string]struct {
		Value any `json:"value"`
	}
	if err := json.Unmarshal([]byte(a.must("output", "-json")), &raw); err != nil {
		a.t.Fatal(err)
	}
	out := map[string]any{}
	for k, v := range raw {
		out[k] = v.Value
	}
	return out
}

// TestAuthCoreAppliesAndConverges applies every fixture's auth-core with
// the real provider against the fake and plans again: no changes.
func TestAuthCoreAppliesAndConverges(t *testing.T) {
	plugins := authentikPlugins(t)
	applied := 0
	for _, fx := range renderAll(t) {
		if _, ok := fx.tree["terraform/auth-core/main.tf.json"]; !ok {
			continue
		}
		t.Run(fx.name, func(t *testing.T) {
			fake := fakeauthentik.New(fakeToken)
			defer fake.Close()
			a := newAuthCoreRun(t, plugins, fake)
			a.write(fx.tree)
			a.applyAndConverge()
			applied++
		})
	}
	if applied < 3 {
		t.Errorf("only %d fixtures have an auth-core root", applied)
	}
}

// renderVariant renders examples/sso.nix with each old string replaced by
// its new one (each must occur).
func renderVariant(t *testing.T, replace ...string) render.Tree {
	t.Helper()
	fixtures.NeedNix(t)
	data, err := os.ReadFile(filepath.Join(fixtures.Root(), "examples", "sso.nix"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(src, replace[i]) {
			t.Fatalf("examples/sso.nix has no %q", replace[i])
		}
		src = strings.ReplaceAll(src, replace[i], replace[i+1])
	}
	file := filepath.Join(t.TempDir(), "sso.nix")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return renderManifest(t, file, filepath.Join(t.TempDir(), "out"))
}

// planChanges returns the resource changes of a saved plan as
// "address action,action".
func (a *authCoreRun) planChanges() []string {
	a.t.Helper()
	a.must("init", "-plugin-dir="+a.plugins, "-input=false", "-no-color")
	a.must("plan", "-out=tfplan", "-input=false", "-no-color")
	var plan struct {
		ResourceChanges []struct {
			Address string `json:"address"`
			Change  struct {
				Actions []string `json:"actions"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	if err := json.Unmarshal([]byte(a.must("show", "-json", "tfplan")), &plan); err != nil {
		a.t.Fatal(err)
	}
	var out []string
	for _, rc := range plan.ResourceChanges {
		if len(rc.Change.Actions) == 1 && (rc.Change.Actions[0] == "no-op" || rc.Change.Actions[0] == "read") {
			continue
		}
		out = append(out, rc.Address+" "+strings.Join(rc.Change.Actions, ","))
	}
	return out
}

// TestEmbeddedOutpostIsAttachedToNotOwned (findings 4 and the provider's
// attachment race): the proxy providers of several forward_auth routes are
// attached to Authentik's embedded outpost one after another even when
// the root is applied by hand with Terraform's default parallelism — the
// fake answers each outpost read late, so parallel read-modify-writes
// would overlap and lose each other (it fails so without the generated
// depends_on chain) — a provider bound to it outside nixmox stays,
// renaming a route moves its attachment without losing another (applied
// one operation at a time as nixmox-server does: in parallel the new
// attachment writes back the renamed route's deleted provider, "Invalid
// pk"), and removing the last forward_auth route destroys only nixmox's
// attachments, never the outpost.
func TestEmbeddedOutpostIsAttachedToNotOwned(t *testing.T) {
	plugins := authentikPlugins(t)
	fake := fakeauthentik.New(fakeToken)
	defer fake.Close()
	fake.OutpostReadHold = 150 * time.Millisecond
	foreign := fake.AttachForeignProxy("hand-made-proxy")
	a := newAuthCoreRun(t, plugins, fake)

	a.byHand = true
	a.write(renderVariant(t))
	a.applyAndConverge()
	a.byHand = false
	want := []string{"grafana-proxy", foreign, "media-jellyfin-proxy", "media-radarr-proxy", "media-sonarr-proxy"}
	if got := fake.EmbeddedProviders(); !slices.Equal(got, want) {
		t.Fatalf("the embedded outpost serves %q, want %q", got, want)
	}

	a.write(renderVariant(t, "sonarr = {", "series = {"))
	a.applyAndConverge()
	want = []string{"grafana-proxy", foreign, "media-jellyfin-proxy", "media-radarr-proxy", "media-series-proxy"}
	if got := fake.EmbeddedProviders(); !slices.Equal(got, want) {
		t.Fatalf("after renaming a route the embedded outpost serves %q, want %q", got, want)
	}

	a.write(renderVariant(t, "authz = true", "authz = false"))
	for _, c := range a.planChanges() {
		if strings.Contains(c, "authentik_outpost.") || !strings.HasSuffix(c, " delete") {
			t.Errorf("removing every forward_auth route plans %s", c)
		}
	}
	a.applyAndConverge()
	if got := fake.EmbeddedProviders(); !slices.Equal(got, []string{foreign}) {
		t.Errorf("after the last forward_auth route went, the embedded outpost serves %q, want only %q", got, foreign)
	}
}

// TestAuthCoreFlowsKeysAndOutposts applies examples/sso.nix and checks
// what Authentik ends up with: RADIUS logins run the authentication flow
// (finding 3); ID tokens are signed with the self-signed key pair, whose
// private key is never fetched into the state (finding 5); the LDAP and
// RADIUS outposts get API tokens of their own service accounts, routed to
// the service that runs them, and the LDAP bind account may only search
// the directory, through a role (finding 7).
func TestAuthCoreFlowsKeysAndOutposts(t *testing.T) {
	plugins := authentikPlugins(t)
	fake := fakeauthentik.New(fakeToken)
	defer fake.Close()
	a := newAuthCoreRun(t, plugins, fake)
	tree := renderVariant(t)
	a.write(tree)
	a.applyAndConverge()

	if got, want := fake.Object("provider", "nixmox-radius")["authorization_flow"], fake.FlowPK("default-authentication-flow"); got != want {
		t.Errorf("the RADIUS provider's flow is %v, want default-authentication-flow (%s)", got, want)
	}

	key := fake.KeyPairPK(fakeauthentik.SelfSigned)
	for _, name := range []string{"grafana", "vault"} {
		if got := fake.Object("provider", name)["signing_key"]; got != key {
			t.Errorf("OIDC provider %s signs with %v, want the self-signed key pair %s", name, got, key)
		}
	}
	state, err := os.ReadFile(filepath.Join(a.dir, "terraform.tfstate"))
	if err != nil {
		t.Fatal(err)
	}
	if pk := fake.PrivateKey(); pk == "" || strings.Contains(string(state), strings.Split(pk, "\n")[1]) {
		t.Error("the signing key's private key reached the Terraform state")
	}
	for _, r := range fake.Requests() {
		if strings.Contains(r.Path, "view_private_key") {
			t.Errorf("auth-core asked for a private key: %s %s", r.Method, r.Path)
		}
	}

	outs := a.outputs()
	var routes map[string][]render.OutputRoute
	if err := json.Unmarshal(tree["terraform/auth-core/"+render.OutputRoutesFile], &routes); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"ldap", "radius"} {
		outpost := fake.Object("outpost", "nixmox-"+kind)
		token := fake.Object("token", "nixmox-"+kind+"-outpost")
		if outpost == nil || token == nil {
			t.Fatalf("%s: outpost %v, token %v", kind, outpost, token)
		}
		account := fake.Object("user", "ak-outpost-"+strings.ReplaceAll(outpost["pk"].(string), "-", ""))
		if account == nil || token["user"] != account["pk"] || token["intent"] != "api" || token["expiring"] != false {
			t.Errorf("%s outpost's token %v: want a non-expiring API token of the outpost's service account %v", kind, token, account)
		}
		if outs[kind+"_outpost_token"] != fake.TokenKey("nixmox-"+kind+"-outpost") {
			t.Errorf("output %s_outpost_token is not the outpost's token", kind)
		}
		want := []render.OutputRoute{{Service: "directory", As: "authentik-" + kind + "-outpost-token"}}
		if got := routes[kind+"_outpost_token"]; !slices.Equal(got, want) {
			t.Errorf("%s_outpost_token goes to %v, want %v", kind, got, want)
		}
	}
	bind := fake.Object("user", "nixmox-ldap-bind")
	role := fake.Object("role", "nixmox-ldap-search")
	if bind == nil || role == nil || bind["type"] != "service_account" || !slices.Equal(strs(bind["roles"]), []string{role["pk"].(string)}) {
		t.Fatalf("bind account %v, role %v: want a service account with the search role only", bind, role)
	}
	ldap := fake.Object("provider", "nixmox-ldap")
	if got, want := fake.RolePermissions("nixmox-ldap-search"), []string{fmt.Sprintf("authentik_providers_ldap.search_full_directory@%v", ldap["pk"])}; !slices.Equal(got, want) {
		t.Errorf("the bind role may %q, want %q", got, want)
	}
	pw := fake.Object("token", "nixmox-ldap-bind")
	if pw == nil || pw["intent"] != "app_password" || pw["user"] != bind["pk"] || outs["ldap_bind_password"] != fake.TokenKey("nixmox-ldap-bind") {
		t.Errorf("bind password token %v: want an app password of the bind account, output as ldap_bind_password", pw)
	}
	if outs["ldap_bind_dn"] != "cn=nixmox-ldap-bind,ou=users,dc=sso,dc=lan" {
		t.Errorf("ldap_bind_dn = %v", outs["ldap_bind_dn"])
	}
	if got, want := routes["ldap_bind_password"], []render.OutputRoute{{Service: "wiki", As: render.SecretLDAPBindPassword}}; !slices.Equal(got, want) {
		t.Errorf("ldap_bind_password goes to %v, want %v", got, want)
	}
}

func strs(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

// TestUnknownScopeFailsNamingIt (finding 8): a scope no scope mapping
// serves fails the plan, naming the scope, instead of being dropped.
func TestUnknownScopeFailsNamingIt(t *testing.T) {
	plugins := authentikPlugins(t)
	fake := fakeauthentik.New(fakeToken)
	defer fake.Close()
	a := newAuthCoreRun(t, plugins, fake)
	a.write(renderVariant(t, `"offline_access" ]`, `"offline_access" "calendar" ]`))
	a.must("init", "-plugin-dir="+a.plugins, "-input=false", "-no-color")
	out, code := a.tf("plan", "-input=false", "-no-color")
	if code == 0 || !strings.Contains(out, `scope["calendar"]`) || !strings.Contains(out, "No matching mappings found") {
		t.Errorf("plan with an unknown scope exited %d:\n%s\nwant an error naming scope[\"calendar\"]", code, out)
	}
}

// TestUpgradeKeepsTheEmbeddedOutpost: auth-core once imported Authentik's
// embedded outpost as authentik_outpost.embedded and owned it. A root of
// today applied over that state forgets it (a removed block) instead of
// destroying Authentik's outpost, and attaches its providers to it.
func TestUpgradeKeepsTheEmbeddedOutpost(t *testing.T) {
	plugins := authentikPlugins(t)
	fake := fakeauthentik.New(fakeToken)
	defer fake.Close()
	a := newAuthCoreRun(t, plugins, fake)
	// The old root's embedded outpost, imported, owning its provider list.
	a.write(render.Tree{"terraform/auth-core/main.tf.json": []byte(`{
  "terraform": {"required_providers": {"authentik": {"source": "goauthentik/authentik", "version": ">= 2024.8.0"}}},
  "provider": {"authentik": {"url": "${var.authentik_url}", "token": "${var.authentik_token}"}},
  "variable": {"authentik_url": {"type": "string"}, "authentik_token": {"type": "string", "sensitive": true}},
  "data": {"authentik_outpost": {"e": {"name": "authentik Embedded Outpost"}}},
  "resource": {"authentik_outpost": {"embedded": {"name": "authentik Embedded Outpost", "type": "proxy", "protocol_providers": []}}},
  "import": [{"to": "authentik_outpost.embedded", "id": "${data.authentik_outpost.e.id}"}]
}`)})
	a.applyAndConverge()

	a.write(renderVariant(t))
	forgets := 0
	for _, c := range a.planChanges() {
		if c == "authentik_outpost.embedded forget" {
			forgets++
		} else if strings.HasPrefix(c, "authentik_outpost.") {
			t.Errorf("the upgraded root plans %s", c)
		}
	}
	if forgets != 1 {
		t.Error("the upgraded root does not forget authentik_outpost.embedded")
	}
	a.applyAndConverge()
	if fake.Object("outpost", fakeauthentik.EmbeddedOutpost) == nil || len(fake.EmbeddedProviders()) != 4 {
		t.Errorf("after the upgrade the embedded outpost serves %q, want the four proxy providers", fake.EmbeddedProviders())
	}
}
