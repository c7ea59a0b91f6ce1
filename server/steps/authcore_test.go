package steps

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/fakeauthentik"
	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/terraform"
)

// TestAuthCoreStepAgainstFakeAuthentik runs tf:auth-core of examples/sso.nix
// the way nixmox-server does — the real terraform through the Runner, the
// real goauthentik/authentik 2026.5.0 provider (found in Terraform's
// implicit local mirror, ~/.terraform.d/plugins: nothing is downloaded),
// the Authentik URL and token from the server's TF_VAR_ environment — against
// internal/fakeauthentik, a fake of Authentik's API. Then: the outposts'
// tokens, the bind password and the OIDC client secret reach the agents of
// the services they are routed to as secrets, their values are in no step
// log, and a second run finds nothing to change.
func TestAuthCoreStepAgainstFakeAuthentik(t *testing.T) {
	testenv.RequireTool(t, "terraform", "tar", "xz")
	fixtures.NeedNix(t)
	archive := fixtures.Shared(t, "terraform-plugins/terraform-provider-authentik_2026.5.0_linux_amd64.tar.xz")
	home := t.TempDir()
	plugins := filepath.Join(home, ".terraform.d", "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xJf", archive, "-C", plugins).CombinedOutput(); err != nil {
		t.Fatalf("unpacking the provider: %v\n%s", err, out)
	}
	t.Setenv("HOME", home)
	t.Setenv("CHECKPOINT_DISABLE", "1")
	fake := fakeauthentik.New("server-token")
	defer fake.Close()
	t.Setenv("TF_VAR_authentik_url", fake.URL())
	t.Setenv("TF_VAR_authentik_token", "server-token")
	t.Setenv("TF_VAR_radius_shared_secret", "radius-shared-secret-value")

	file := filepath.Join(fixtures.Root(), "examples", "sso.nix")
	g := fixtures.Load(t, file)
	work := t.TempDir()
	tree, err := render.Render(g, render.Options{ManifestDir: filepath.Dir(file), OutDir: work})
	if err != nil {
		t.Fatal(err)
	}
	logs := t.TempDir()
	j := &Job{M: g.Manifest(), G: g, Dir: filepath.Dir(file), Tree: tree, LogDir: logs}
	st := newStore(t)
	key, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Terraform{Store: st, Applier: &terraform.Runner{}, Secrets: key, WorkDir: work}
	s := step(plan.TFAuthCore, "")
	if err := r.Run(testCtx(t), j, s); err != nil {
		log, _ := os.ReadFile(filepath.Join(logs, terraform.Workspace(s.ID)+".log"))
		t.Fatalf("%v\n%s", err, log)
	}

	b := &Build{Store: st, Secrets: key}
	want := map[string]map[string]string{
		"directory": {render.SecretLDAPOutpostToken: fake.TokenKey("nixmox-ldap-outpost"), render.SecretRADIUSOutpostToken: fake.TokenKey("nixmox-radius-outpost")},
		"wiki":      {render.SecretLDAPBindPassword: fake.TokenKey("nixmox-ldap-bind")},
		"grafana":   {"oidc-grafana": fake.Object("provider", "grafana")["client_secret"].(string)},
		"vault":     {}, // a public client: no secret
	}
	var values []string
	for svc, secrets := range want {
		_, got, err := b.closureArgs(j, j.M.Service(svc))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(secrets) {
			t.Errorf("%s gets secrets %v, want %v", svc, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(secrets)))
		}
		for name, value := range secrets {
			if value == "" || string(got[name]) != value {
				t.Errorf("%s's secret %s is %q, want %q", svc, name, got[name], value)
			}
			values = append(values, value)
		}
	}

	if err := r.Run(testCtx(t), j, s); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(logs, terraform.Workspace(s.ID)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "No changes."); n != 1 {
		t.Errorf("the second run planned changes (%d \"No changes.\" in the log)", n)
	}
	for _, v := range append(values, "server-token", "radius-shared-secret-value") {
		if strings.Contains(string(log), v) {
			t.Errorf("a secret's value is in the step log")
		}
	}
}
