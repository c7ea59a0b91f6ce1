// Package terraform runs the Terraform root modules nixmox generates, with
// hashicorp/terraform-exec against `terraform` or `tofu`.
//
// Each root has a working directory of its own that persists between
// rollouts (its .terraform and, with the default local backend, its state).
// A run initialises the root only when its configuration changed since the
// last init, selects the root's workspace, plans with -detailed-exitcode,
// applies the saved plan only when there are changes, and reads the root's
// outputs once with `output -json`.
package terraform

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-config-inspect/tfconfig"
	"github.com/hashicorp/terraform-exec/tfexec"

	"github.com/nixmox/nixmox/internal/atomicfile"
)

// Runner runs root modules.
type Runner struct {
	// Binary is the program, "terraform" or "tofu" or a path; "" means
	// terraform.
	Binary string
	// PluginCacheDir is shared by every root so a provider is downloaded
	// once; "" means none.
	PluginCacheDir string
	// Backend, if set, is the name of the state backend every root uses
	// (e.g. "pg"); its settings come from BackendConfig and the backend's own
	// environment variables (PG_CONN_STR), never from the manifest. ""
	// keeps state in each root's working directory.
	Backend       string
	BackendConfig map[string]string
}

// Output is one root output after apply. Value is its JSON.
type Output struct {
	Name      string
	Sensitive bool
	Value     json.RawMessage
}

// Result is what a run did.
type Result struct {
	// Changed is false when the plan had nothing to do (and nothing was
	// applied).
	Changed bool
	Outputs []Output
}

// binary finds the terraform (or tofu) program.
func (r *Runner) binary() (string, error) {
	bin := r.Binary
	if bin == "" {
		bin = "terraform"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s is not on PATH: install Terraform (or OpenTofu, and start the server with --terraform tofu)", bin)
	}
	return path, nil
}

// Version runs the program's version command and returns its version
// and path; the error says when it is missing or does not run.
func (r *Runner) Version(ctx context.Context) (string, string, error) {
	path, err := r.binary()
	if err != nil {
		return "", "", err
	}
	dir, err := os.MkdirTemp("", "nixmox-tf-version-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	tf, err := tfexec.NewTerraform(dir, path)
	if err != nil {
		return "", "", err
	}
	tf.SetEnv(environ())
	v, _, err := tf.Version(ctx, true)
	if err != nil {
		return "", path, fmt.Errorf("%s does not run: %w", path, err)
	}
	return v.String(), path, nil
}

// initMarker records the hash of the configuration a root was last
// initialised with.
const initMarker = ".terraform/nixmox-init"

// Apply brings the root in dir to its configuration in workspace and
// returns its outputs. Terraform's output goes to log (sensitive values are
// redacted by Terraform itself); its error text is returned as is.
// parallelism > 0 limits how many operations Terraform runs at once (1:
// one at a time); 0 leaves Terraform's default.
func (r *Runner) Apply(ctx context.Context, dir, workspace string, parallelism int, log io.Writer) (Result, error) {
	path, err := r.binary()
	if err != nil {
		return Result{}, err
	}
	if r.Backend != "" {
		override := map[string]any{"terraform": map[string]any{"backend": map[string]any{r.Backend: map[string]any{}}}}
		data, _ := json.Marshal(override)
		if err := os.WriteFile(filepath.Join(dir, "nixmox_backend_override.tf.json"), data, 0o600); err != nil {
			return Result{}, err
		}
	}
	tf, err := tfexec.NewTerraform(dir, path)
	if err != nil {
		return Result{}, err
	}
	if log != nil {
		tf.SetStdout(log)
		tf.SetStderr(log)
	}
	env := environ()
	if r.PluginCacheDir != "" {
		if err := os.MkdirAll(r.PluginCacheDir, 0o700); err != nil {
			return Result{}, err
		}
		env["TF_PLUGIN_CACHE_DIR"] = r.PluginCacheDir
	}
	if err := tf.SetEnv(env); err != nil {
		return Result{}, err
	}

	if err := r.init(ctx, tf, dir); err != nil {
		return Result{}, err
	}
	if err := selectWorkspace(ctx, tf, workspace); err != nil {
		return Result{}, err
	}
	planFile := filepath.Join(dir, ".terraform", "nixmox.tfplan") // init made .terraform
	defer os.Remove(planFile)
	// State and plans hold secrets: owner-only, inside an owner-only
	// directory (Terraform writes them 0644).
	defer ownerOnly(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return Result{}, err
	}
	planOpts := []tfexec.PlanOption{tfexec.Out(planFile)}
	varFile, err := writeVarFile(dir)
	if err != nil {
		return Result{}, err
	}
	if varFile != "" {
		defer os.Remove(varFile)
		planOpts = append(planOpts, tfexec.VarFile(varFile))
	}
	changed, err := tf.Plan(ctx, planOpts...)
	if err != nil {
		return Result{}, err
	}
	if changed {
		opts := []tfexec.ApplyOption{tfexec.DirOrPlan(planFile)}
		if parallelism > 0 {
			opts = append(opts, tfexec.Parallelism(parallelism))
		}
		if err := tf.Apply(ctx, opts...); err != nil {
			return Result{}, err
		}
	}
	// `output -json` prints sensitive values: it must not reach the log.
	tf.SetStdout(io.Discard)
	outs, err := tf.Output(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{Changed: changed}
	for name, o := range outs {
		res.Outputs = append(res.Outputs, Output{Name: name, Sensitive: o.Sensitive, Value: o.Value})
	}
	sort.Slice(res.Outputs, func(i, j int) bool { return res.Outputs[i].Name < res.Outputs[j].Name })
	return res, nil
}

// writeVarFile writes the values the server's environment gives the root's
// variables (TF_VAR_<name>, as Terraform itself would read them) into an
// owner-only var file under the root's .terraform, and returns its path (""
// when there are none). terraform-exec refuses TF_VAR_ variables in the
// environment it passes on, and -var would show the values — an Authentik
// token, a RADIUS secret — in the process list; a file does neither. A
// value is read as Terraform reads one from the environment: as HCL for a
// variable of a complex type, so only variables of a primitive type (or
// none given) are passed, as strings Terraform converts.
func writeVarFile(dir string) (string, error) {
	mod, diags := tfconfig.LoadModule(dir)
	if diags.HasErrors() {
		return "", diags.Err()
	}
	vars := map[string]string{}
	for name, v := range mod.Variables {
		val, ok := os.LookupEnv("TF_VAR_" + name)
		if !ok {
			continue
		}
		if !slices.Contains([]string{"", "string", "number", "bool"}, v.Type) {
			return "", fmt.Errorf("TF_VAR_%s: variable %q is of type %s; nixmox passes only string, number and bool variables from its environment", name, name, v.Type)
		}
		vars[name] = val
	}
	if len(vars) == 0 {
		return "", nil
	}
	data, err := json.Marshal(vars)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, ".terraform", "nixmox-env.tfvars.json")
	return path, atomicfile.Write(path, data, 0o600)
}

// ownerOnly makes the Terraform state and plan files under dir 0600.
func ownerOnly(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if n := d.Name(); strings.HasSuffix(n, ".tfplan") || strings.Contains(n, ".tfstate") {
			_ = os.Chmod(p, 0o600)
		}
		return nil
	})
}

// init runs `terraform init` when the root's configuration differs from the
// one it was last initialised with.
func (r *Runner) init(ctx context.Context, tf *tfexec.Terraform, dir string) error {
	sum, err := configHash(dir, r.Backend, r.BackendConfig)
	if err != nil {
		return err
	}
	marker := filepath.Join(dir, initMarker)
	if old, err := os.ReadFile(marker); err == nil && string(old) == sum {
		return nil
	}
	opts := []tfexec.InitOption{tfexec.Upgrade(false)}
	for _, k := range slices.Sorted(maps.Keys(r.BackendConfig)) {
		opts = append(opts, tfexec.BackendConfig(k+"="+r.BackendConfig[k]))
	}
	if err := tf.Init(ctx, opts...); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		return err
	}
	return os.WriteFile(marker, []byte(sum), 0o600)
}

// configHash hashes the root's own configuration files (not its state or
// .terraform) and the backend settings: what init depends on.
func configHash(dir, backend string, config map[string]string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "backend=%q\n", backend)
	for _, k := range slices.Sorted(maps.Keys(config)) {
		fmt.Fprintf(h, "%q=%q\n", k, config[k])
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".tf") || strings.HasSuffix(name, ".tf.json")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// selectWorkspace selects workspace, creating it the first time.
func selectWorkspace(ctx context.Context, tf *tfexec.Terraform, workspace string) error {
	if workspace == "" || workspace == "default" {
		return nil
	}
	current, err := tf.WorkspaceShow(ctx)
	if err != nil {
		return err
	}
	if current == workspace {
		return nil
	}
	list, _, err := tf.WorkspaceList(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(list, workspace) {
		return tf.WorkspaceSelect(ctx, workspace)
	}
	return tf.WorkspaceNew(ctx, workspace)
}

// environ is this process's environment without the variables
// terraform-exec manages itself (it refuses them).
func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.HasPrefix(k, "TF_") {
			continue
		}
		env[k] = v
	}
	return env
}

// Workspace is the workspace name of a step: letters, digits and dashes.
func Workspace(stepID string) string {
	var b strings.Builder
	for _, r := range stepID {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Sync makes dir hold exactly files' Terraform configuration: each file is
// written (by temp file and rename), and configuration files no longer in
// files are removed from dir itself. State, .terraform and subdirectories
// are left alone.
func Sync(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for rel, data := range files {
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		tmp := dst + ".nixmox-tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
	}
	// Only the root's own files: a nested directory may be another root
	// (a service's config root lives inside its infra root).
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".tf") || strings.HasSuffix(name, ".tf.json")) || name == "nixmox_backend_override.tf.json" {
			continue
		}
		if _, ok := files[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
