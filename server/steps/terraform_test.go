package steps

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/terraform"
)

// tfJob is a job for a service "web" whose Terraform root calls a user
// module in the manifest's directory, rendered as a rollout renders it.
func tfJob(t *testing.T) (*Job, string) {
	t.Helper()
	dir := t.TempDir()
	mod := filepath.Join(dir, "modules", "site")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "main.tf"), []byte(`output "title" { value = "one" }`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, `"web": {"ip": "10.9.0.10", "hostname": "web.lab.test", "exec": ["true"],
	  "interface": {"terraform": {"modules": ["./modules/site"]}}}`)
	return &Job{M: m, Dir: dir, Tree: render.Tree{
		"terraform/services/web/main.tf.json": []byte(`{"module": {"site": {"source": "../../modules/site"}}}`),
	}}, mod
}

// TestTerraformRecordsOutputsSealingSensitiveOnes: a Terraform step syncs
// its rendered root into its working directory, applies it in the step's
// workspace, and stores its outputs — a sensitive one only sealed, so the
// state file never holds its value.
func TestTerraformRecordsOutputsSealingSensitiveOnes(t *testing.T) {
	j, _ := tfJob(t)
	st := newStore(t)
	key, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	tf := &fakeApplier{outputs: []terraform.Output{
		{Name: "title", Value: []byte(`"Hello"`)},
		{Name: "token", Sensitive: true, Value: []byte(`"s3cret-token"`)},
	}}
	work := t.TempDir()
	r := &Terraform{Store: st, Applier: tf, Secrets: key, WorkDir: work}
	s := step(plan.TFServiceInfra, "web")
	if err := r.Run(testCtx(t), j, s); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(work, "terraform", "services", "web")
	if len(tf.dirs) != 1 || tf.dirs[0] != root+"@tf-service-infra-web" {
		t.Errorf("applied %q, want %s in workspace tf-service-infra-web", tf.dirs, root)
	}
	if _, err := os.Stat(filepath.Join(root, "main.tf.json")); err != nil {
		t.Errorf("the root was not synced into its working directory: %v", err)
	}
	outs, err := st.RootOutputs("terraform/services/web")
	if err != nil || len(outs.Outputs) != 2 {
		t.Fatalf("stored outputs %+v, %v", outs, err)
	}
	for _, o := range outs.Outputs {
		switch o.Name {
		case "title":
			if string(o.Value) != `"Hello"` || o.Sensitive {
				t.Errorf("title stored as %+v", o)
			}
		case "token":
			if o.Value != nil || !o.Sensitive || strings.Contains(string(o.Sealed), "s3cret") {
				t.Errorf("token stored as %+v: want it sealed only", o)
			}
			if plain, err := key.Open("terraform/services/web/token", o.Sealed); err != nil || string(plain) != `"s3cret-token"` {
				t.Errorf("the sealed token opens to %q, %v", plain, err)
			}
		}
	}
	// A server without a secrets key refuses a sensitive output.
	r.Secrets = nil
	if err := r.Run(testCtx(t), j, s); err == nil || !strings.Contains(err.Error(), "output token of terraform/services/web is sensitive") {
		t.Errorf("without a secrets key: %v", err)
	}
	// And one without Terraform says so.
	if err := (&Terraform{Store: st}).Run(testCtx(t), j, s); !errors.Is(err, ErrNoTerraform) {
		t.Errorf("without Terraform: %v", err)
	}
}

// TestAuthCoreAppliesOneOperationAtATime: tf:auth-core runs Terraform
// with -parallelism=1 (outpost provider attachments read and write the
// outpost's whole provider list; pkg/render's
// TestEmbeddedOutpostIsAttachedToNotOwned shows the race against the fake
// Authentik), other roots with Terraform's default.
func TestAuthCoreAppliesOneOperationAtATime(t *testing.T) {
	j, _ := tfJob(t)
	tf := &fakeApplier{}
	r := &Terraform{Store: newStore(t), Applier: tf, WorkDir: t.TempDir()}
	for _, s := range []plan.Step{step(plan.TFAuthCore, ""), step(plan.TFServiceInfra, "web")} {
		if err := r.Run(testCtx(t), j, s); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(tf.parallelism, []int{1, 0}) {
		t.Errorf("applied with parallelism %v, want tf:auth-core 1 and tf:service-infra:web Terraform's default", tf.parallelism)
	}
}

// TestTerraformFingerprintFollowsItsInputs: a Terraform step runs again
// when its rendered root or the source of a module it calls changes, and
// only then.
func TestTerraformFingerprintFollowsItsInputs(t *testing.T) {
	j, mod := tfJob(t)
	r := &Terraform{}
	s := step(plan.TFServiceInfra, "web")
	fp := func() string {
		t.Helper()
		f, err := r.Fingerprint(testCtx(t), j, s)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	first := fp()
	if again := fp(); again != first {
		t.Fatal("the same inputs gave another fingerprint")
	}
	if err := os.WriteFile(filepath.Join(mod, "main.tf"), []byte(`output "title" { value = "two" }`), 0o644); err != nil {
		t.Fatal(err)
	}
	afterModule := fp()
	if afterModule == first {
		t.Error("a changed module source did not change the fingerprint")
	}
	j.Tree["terraform/services/web/main.tf.json"] = []byte(`{"module": {}}`)
	if fp() == afterModule {
		t.Error("a changed root did not change the fingerprint")
	}
	// Another service's root is not this step's input.
	before := fp()
	j.Tree["terraform/services/other/main.tf.json"] = []byte(`{}`)
	if fp() != before {
		t.Error("another root changed this step's fingerprint")
	}
}
