package steps

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/store"
)

// A closure that writes the nixmox argument it was built with into its
// output, so a test reads back what the build runner handed Nix.
const echoClosure = `{ nixmox ? "{}" }: derivation {
  name = "nixmox-steps-test";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo \"$arg\" > $out" ];
  arg = nixmox;
}`

func buildJob(t *testing.T) *Job {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.nix"), []byte(echoClosure), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Job{M: testManifest(t, webService), Dir: dir, Files: "/tmp/generated"}
}

// TestDeployBuildsPublishesAndDelivers: the nix step builds the closure
// with the service's name, the rendered files, its Terraform outputs and
// the names of its secrets (never their values) as the nixmox argument,
// signs it into the binary cache, and hands it with the secrets' values
// to the agent.
func TestDeployBuildsPublishesAndDelivers(t *testing.T) {
	needNix(t)
	st, hub := newStore(t), &agents.Hub{}
	key, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := key.Seal("terraform/services/web/token", []byte(`"s3cret"`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutOutputs(store.Outputs{Root: "terraform/services/web", Outputs: []store.Output{
		{Name: "title", Value: []byte(`"Hello"`)}, {Name: "token", Sensitive: true, Sealed: sealed}}}); err != nil {
		t.Fatal(err)
	}
	cacheKey, err := nix.LoadOrCreateCacheKey(context.Background(), filepath.Join(t.TempDir(), "key"), "nixmox-test")
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	b := &Build{Store: st, Secrets: key, CacheDir: cache, CacheKey: cacheKey}
	d := &Deploy{Build: b, Deliver: &Deliver{Store: st, Agents: hub, CacheDir: cache, CachePublicKey: cacheKey.Public}}
	a := attach(t, hub, &nixmoxv1.Hello{})
	j := buildJob(t)
	if err := d.Run(testCtx(t), j, step(plan.NixServiceConfig, "web")); err != nil {
		t.Fatal(err)
	}
	if s := a.next().GetSecrets().GetValues(); string(s["token"]) != "s3cret" {
		t.Errorf("secrets sent %q", s)
	}
	des := a.next().GetDesired()
	out, err := os.ReadFile(des.GetStorePath())
	if err != nil {
		t.Fatalf("the desired store path %q: %v", des.GetStorePath(), err)
	}
	var arg struct {
		Service string            `json:"service"`
		Files   string            `json:"files"`
		Outputs map[string]string `json:"outputs"`
		Secrets []string          `json:"secrets"`
	}
	if err := json.Unmarshal(out, &arg); err != nil {
		t.Fatalf("the closure's argument %s: %v", out, err)
	}
	if arg.Service != "web" || arg.Files != "/tmp/generated" || arg.Outputs["title"] != "Hello" || len(arg.Secrets) != 1 || arg.Secrets[0] != "token" {
		t.Errorf("built with %+v", arg)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Error("a secret's value reached the Nix store")
	}
	// Signed into the cache: its narinfo names the server's key.
	hash := strings.SplitN(filepath.Base(des.GetStorePath()), "-", 2)[0]
	info, err := os.ReadFile(filepath.Join(cache, hash+".narinfo"))
	if err != nil || !strings.Contains(string(info), "Sig: nixmox-test:") {
		t.Errorf("narinfo %q, %v: want it signed by nixmox-test", info, err)
	}
	if des.GetCacheUrl() != "file://"+cache || des.GetCachePublicKey() != cacheKey.Public {
		t.Errorf("desired names cache %q key %q", des.GetCacheUrl(), des.GetCachePublicKey())
	}
}

// TestDeployFingerprintFollowsTheClosure: the nix and verify steps of a
// service run again when its closure's derivation changes — its source,
// or a Terraform output it is built with — or a secret's value changes,
// and not otherwise.
func TestDeployFingerprintFollowsTheClosure(t *testing.T) {
	needNix(t)
	st := newStore(t)
	key, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	b := &Build{Store: st, Secrets: key}
	d, v := &Deploy{Build: b}, &Verify{Build: b}
	src := echoClosure
	fp := func() string {
		t.Helper()
		// A new job each time, as each rollout is: the derivation is
		// instantiated once per job.
		j := buildJob(t)
		if err := os.WriteFile(filepath.Join(j.Dir, "web.nix"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		nixFP, err := d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, "web"))
		if err != nil {
			t.Fatal(err)
		}
		verifyFP, err := v.Fingerprint(testCtx(t), j, step(plan.Verify, "web"))
		if err != nil {
			t.Fatal(err)
		}
		if nixFP == verifyFP {
			t.Fatal("the nix and verify steps share a fingerprint: each must name its step")
		}
		return nixFP
	}
	first := fp()
	if fp() != first {
		t.Fatal("the same closure gave another fingerprint")
	}
	put := func(value string, sensitive bool) {
		o := store.Output{Name: "title", Value: []byte(value)}
		if sensitive {
			sealed, err := key.Seal("terraform/services/web/title", []byte(value))
			if err != nil {
				t.Fatal(err)
			}
			o = store.Output{Name: "title", Sensitive: true, Sealed: sealed}
		}
		if err := st.PutOutputs(store.Outputs{Root: "terraform/services/web", Outputs: []store.Output{o}}); err != nil {
			t.Fatal(err)
		}
	}
	put(`"Hello"`, false)
	withOutput := fp()
	if withOutput == first {
		t.Error("a new Terraform output did not change the fingerprint")
	}
	put(`"one"`, true)
	secretOne := fp()
	put(`"two"`, true)
	secretTwo := fp()
	if secretTwo == secretOne {
		t.Error("a changed secret value did not change the fingerprint")
	}
	src = strings.Replace(echoClosure, "nixmox-steps-test", "nixmox-steps-test-2", 1)
	if fp() == secretTwo {
		t.Error("a changed closure did not change the fingerprint")
	}
}

// TestSharedRootOutputsReachTheirService: an output of tf:auth-core that
// the rendered routes give to a service (an OIDC client secret, an
// outpost's token) reaches that service's agent as a secret under the
// routed name, and no other service's.
func TestSharedRootOutputsReachTheirService(t *testing.T) {
	st := newStore(t)
	key, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := key.Seal("terraform/auth-core/ldap_outpost_token", []byte(`"tok-value-9f3"`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutOutputs(store.Outputs{Root: "terraform/auth-core", Outputs: []store.Output{
		{Name: "ldap_outpost_token", Sensitive: true, Sealed: sealed},
		{Name: "ldap_bind_dn", Value: []byte(`"cn=bind,ou=users,dc=lab"`)}}}); err != nil {
		t.Fatal(err)
	}
	j := buildJob(t)
	j.Tree = render.Tree{"terraform/auth-core/" + render.OutputRoutesFile: []byte(`{
  "ldap_outpost_token": [{"service": "web", "as": "authentik-ldap-outpost-token"}],
  "ldap_bind_dn": [{"service": "web", "as": "ldap_bind_dn"}, {"service": "other", "as": "ldap_bind_dn"}]
}`)}
	b := &Build{Store: st, Secrets: key}
	args, secrets, err := b.closureArgs(j, j.M.Service("web"))
	if err != nil {
		t.Fatal(err)
	}
	if string(secrets["authentik-ldap-outpost-token"]) != "tok-value-9f3" || len(secrets) != 1 {
		t.Errorf("secrets %q, want the outpost's token under its routed name only", secrets)
	}
	if !strings.Contains(args, `"ldap_bind_dn":"cn=bind,ou=users,dc=lab"`) || strings.Contains(args, "tok-value-9f3") {
		t.Errorf("the closure's argument %s: want the bind DN as an output and no secret's value", args)
	}
	// Another rollout, whose tree routes the token elsewhere.
	j = buildJob(t)
	j.Tree = render.Tree{"terraform/auth-core/" + render.OutputRoutesFile: []byte(`{"ldap_outpost_token": [{"service": "other", "as": "t"}]}`)}
	if _, secrets, err := b.closureArgs(j, j.M.Service("web")); err != nil || len(secrets) != 0 {
		t.Errorf("a token routed to another service reached web: %q, %v", secrets, err)
	}
}
