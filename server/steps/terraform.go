package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/seal"
	"github.com/nixmox/nixmox/server/store"
	"github.com/nixmox/nixmox/server/terraform"
)

// Applier applies a Terraform root: terraform.Runner, or a fake.
type Applier interface {
	Apply(ctx context.Context, dir, workspace string, parallelism int, log io.Writer) (terraform.Result, error)
}

// Terraform runs the generated Terraform roots (tf:auth-core,
// tf:service-infra, tf:service-config, and tf:infra's root after the
// containers) and records their outputs, sensitive ones sealed.
type Terraform struct {
	Store *store.Store
	// Applier runs Terraform; nil makes every step with Terraform work
	// fail, saying so.
	Applier Applier
	// Secrets seals sensitive outputs; nil refuses them.
	Secrets *seal.Key
	// WorkDir holds each root's working directory, WorkDir/<root>.
	WorkDir string
}

// ErrNoTerraform is the cause of a Terraform step on a server without
// Terraform.
var ErrNoTerraform = errors.New("this step needs Terraform, and this server has no Terraform runner")

// Fingerprint implements Runner: what the step reads of the manifest
// (nothing for auth-core, whose rendered root holds it all), the root's
// rendered files and the sources of the user modules it calls.
func (t *Terraform) Fingerprint(_ context.Context, j *Job, s plan.Step) (string, error) {
	h := newHash(s)
	if s.Phase != plan.TFAuthCore || j.Tree == nil {
		if err := hashManifest(h, j, s); err != nil {
			return "", err
		}
	}
	if err := hashRoot(h, j, s); err != nil {
		return "", err
	}
	return sum(h), nil
}

// Run implements Runner.
func (t *Terraform) Run(ctx context.Context, j *Job, s plan.Step) error {
	if t == nil || t.Applier == nil || j.Tree == nil {
		return ErrNoTerraform
	}
	root := tfRoot(s)
	work := filepath.Join(t.WorkDir, filepath.FromSlash(root))
	if err := terraform.Sync(work, j.rootFiles(root)); err != nil {
		return err
	}
	log, done := j.StepLog(s.ID)
	defer done()
	// tf:auth-core runs one operation at a time: attaching a provider to
	// Authentik's embedded outpost reads the outpost's provider list and
	// writes it back whole, so an attachment made while another is
	// destroyed (a renamed route) would lose it or write back a deleted
	// provider. The generated root chains its attachments for creation;
	// only serial operation also orders them against destruction.
	parallelism := 0
	if s.Phase == plan.TFAuthCore {
		parallelism = 1
	}
	res, err := t.Applier.Apply(ctx, work, terraform.Workspace(s.ID), parallelism, log)
	if err != nil {
		return fmt.Errorf("terraform (%s): %w", root, err)
	}
	outs := store.Outputs{Root: root, Applied: time.Now()}
	for _, o := range res.Outputs {
		so := store.Output{Name: o.Name, Sensitive: o.Sensitive}
		if o.Sensitive {
			if t.Secrets == nil {
				return fmt.Errorf("output %s of %s is sensitive and this server has no secrets key", o.Name, root)
			}
			if so.Sealed, err = t.Secrets.Seal(root+"/"+o.Name, o.Value); err != nil {
				return err
			}
		} else {
			so.Value = o.Value
		}
		outs.Outputs = append(outs.Outputs, so)
	}
	return t.Store.PutOutputs(outs)
}

// hashRoot adds the step's rendered root and the sources of the user
// modules it calls (nothing without a rendered tree).
func hashRoot(h io.Writer, j *Job, s plan.Step) error {
	root := tfRoot(s)
	if root == "" || j.Tree == nil {
		return nil
	}
	files := j.rootFiles(root)
	for _, p := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "file %s %d\n", p, len(files[p]))
		if _, err := h.Write(files[p]); err != nil {
			return err
		}
	}
	return hashModules(h, j, s)
}

// hashModules adds the sources of the user modules a Terraform step calls.
func hashModules(h io.Writer, j *Job, s plan.Step) error {
	var mods []string
	for _, svc := range j.M.Enabled() {
		tf := svc.Interface.Terraform
		if tf == nil || (s.Service != "" && svc.Name != s.Service) {
			continue
		}
		switch {
		case s.Phase == plan.TFInfra && svc.Core:
			mods = append(mods, tf.Modules...)
		case s.Phase == plan.TFServiceInfra:
			mods = append(mods, tf.Modules...)
		case s.Phase == plan.TFServiceConfig:
			mods = append(mods, tf.ConfigModules...)
		}
	}
	for _, mod := range mods {
		dir := mod
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(j.Dir, mod)
		}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == ".terraform" {
					return filepath.SkipDir
				}
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "module %s %d\n", p, len(data))
			_, err = h.Write(data)
			return err
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
