package terraform

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/internal/testenv"
)

func needTerraform(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "terraform")
}

const root = `resource "terraform_data" "site" {
  input = var.title
}
resource "terraform_data" "token" {
  input = sensitive("s3cr3t-${var.title}")
}
variable "title" {
  type    = string
  default = "hello"
}
output "title" { value = terraform_data.site.output }
output "token" {
  value     = terraform_data.token.output
  sensitive = true
}
`

// TestApplyPlansAppliesAndReadsOutputs runs real Terraform on a root of
// built-in terraform_data resources: the first run applies, the second
// finds nothing to do and does not init again, a change applies again,
// and the outputs (sensitive flagged) come back from the one output call.
func TestApplyPlansAppliesAndReadsOutputs(t *testing.T) {
	needTerraform(t)
	dir := t.TempDir()
	if err := Sync(dir, map[string][]byte{"main.tf": []byte(root), "stale.tf": []byte("# old")}); err != nil {
		t.Fatal(err)
	}
	// A file no longer in the configuration is removed by the next Sync.
	if err := Sync(dir, map[string][]byte{"main.tf": []byte(root)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale.tf")); !os.IsNotExist(err) {
		t.Fatalf("stale.tf survived Sync: %v", err)
	}
	r := &Runner{PluginCacheDir: filepath.Join(t.TempDir(), "plugins")}
	ctx := context.Background()
	var log bytes.Buffer
	res, err := r.Apply(ctx, dir, Workspace("tf:service-infra:web"), 0, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !res.Changed {
		t.Error("first apply: Changed = false")
	}
	if !strings.Contains(log.String(), "Terraform has been successfully initialized") {
		t.Errorf("first run did not init:\n%s", log.String())
	}
	if strings.Contains(log.String(), "s3cr3t") {
		t.Errorf("the sensitive value reached the log:\n%s", log.String())
	}
	// The state holds the secret: owner-only, in an owner-only directory.
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the root's directory: %v, %v; want 0700", fi.Mode(), err)
	}
	states := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tfstate") && !d.IsDir() {
			states++
			if fi, err := d.Info(); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, want 0600", p, fi.Mode())
			}
		}
		return nil
	})
	if states == 0 {
		t.Error("no Terraform state file was written")
	}
	got := map[string]Output{}
	for _, o := range res.Outputs {
		got[o.Name] = o
	}
	var title, token string
	_ = json.Unmarshal(got["title"].Value, &title)
	_ = json.Unmarshal(got["token"].Value, &token)
	if title != "hello" || got["title"].Sensitive || token != "s3cr3t-hello" || !got["token"].Sensitive {
		t.Errorf("outputs = %+v", got)
	}
	// The state is in the step's workspace, not the default one.
	if _, err := os.Stat(filepath.Join(dir, "terraform.tfstate.d", "tf-service-infra-web", "terraform.tfstate")); err != nil {
		t.Errorf("no state in the step's workspace: %v", err)
	}

	log.Reset()
	res, err = r.Apply(ctx, dir, Workspace("tf:service-infra:web"), 0, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if res.Changed {
		t.Errorf("second apply of the same configuration changed something:\n%s", log.String())
	}
	if strings.Contains(log.String(), "Initializing") {
		t.Errorf("an unchanged root was initialised again:\n%s", log.String())
	}

	changed := strings.Replace(root, `default = "hello"`, `default = "bonjour"`, 1)
	if err := Sync(dir, map[string][]byte{"main.tf": []byte(changed)}); err != nil {
		t.Fatal(err)
	}
	res, err = r.Apply(ctx, dir, Workspace("tf:service-infra:web"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	title = ""
	for _, o := range res.Outputs {
		if o.Name == "title" {
			title = string(o.Value)
		}
	}
	if title != `"bonjour"` {
		t.Errorf("title after change = %q, want \"bonjour\" (outputs %+v)", title, res.Outputs)
	}
	if !res.Changed {
		t.Error("a changed configuration was not applied")
	}
}

// TestApplyReturnsTerraformsError: Terraform's own diagnostic reaches the
// caller.
func TestApplyReturnsTerraformsError(t *testing.T) {
	needTerraform(t)
	dir := t.TempDir()
	if err := Sync(dir, map[string][]byte{"main.tf": []byte(`resource "terraform_data" "x" { input = var.missing }`)}); err != nil {
		t.Fatal(err)
	}
	_, err := (&Runner{}).Apply(context.Background(), dir, "", 0, nil)
	if err == nil || !strings.Contains(err.Error(), "Reference to undeclared input variable") {
		t.Fatalf("err = %v, want Terraform's diagnostic", err)
	}
}

func TestWorkspaceName(t *testing.T) {
	if got := Workspace("tf:service-config:a.b/c"); got != "tf-service-config-a-b-c" {
		t.Errorf("Workspace = %q", got)
	}
}

// TestServerEnvironmentReachesVariables: a root's variables take the
// server's TF_VAR_<name> (how tf:auth-core gets the Authentik URL and
// token), through an owner-only var file that is gone after the run —
// terraform-exec refuses TF_VAR_ in the environment it passes, and -var
// would show the value in the process list.
func TestServerEnvironmentReachesVariables(t *testing.T) {
	needTerraform(t)
	dir := t.TempDir()
	if err := Sync(dir, map[string][]byte{"main.tf": []byte(root)}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_VAR_title", "from-the-environment")
	t.Setenv("TF_VAR_undeclared", "ignored")
	var log bytes.Buffer
	res, err := (&Runner{}).Apply(context.Background(), dir, Workspace("tf:auth-core"), 1, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var title string
	for _, o := range res.Outputs {
		if o.Name == "title" {
			_ = json.Unmarshal(o.Value, &title)
		}
	}
	if title != "from-the-environment" {
		t.Errorf("output title = %q, want the value of TF_VAR_title", title)
	}
	if _, err := os.Stat(filepath.Join(dir, ".terraform", "nixmox-env.tfvars.json")); !os.IsNotExist(err) {
		t.Errorf("the var file outlived the run: %v", err)
	}
	if strings.Contains(log.String(), "undeclared") {
		t.Errorf("a variable the root does not declare was passed:\n%s", log.String())
	}
}
