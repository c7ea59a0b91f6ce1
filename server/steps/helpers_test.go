package steps

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/provider"
	"github.com/nixmox/nixmox/server/store"
	"github.com/nixmox/nixmox/server/terraform"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testManifest is a manifest on 10.9.0.0/24 with the given services (JSON
// members of "services").
func testManifest(t *testing.T, services string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(`{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
  "health_check_timeout": 20, "services": {`+services+`}}`), manifest.FormatJSON, "m.json")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func step(phase plan.Phase, service string) plan.Step {
	id := string(phase)
	if service != "" {
		id += ":" + service
	}
	return plan.Step{ID: id, Phase: phase, Service: service}
}

func needNix(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "nix-build")
}

// fakeProvider stands in for a container provider: it records what it is
// asked and observes what the test says the containers look like.
type fakeProvider struct {
	live     string
	err      error
	ensured  [][]string
	all      []bool
	enrolled []string
}

var _ provider.Provider = (*fakeProvider)(nil)

func (f *fakeProvider) Name() string { return "fake" }

func (f *fakeProvider) Ensure(ctx context.Context, _ *manifest.Manifest, services []string, all bool, enroll provider.Enroller, log io.Writer) error {
	f.ensured = append(f.ensured, services)
	f.all = append(f.all, all)
	for _, s := range services {
		if _, err := enroll(ctx, s); err != nil {
			return err
		}
		f.enrolled = append(f.enrolled, s)
	}
	io.WriteString(log, "ensured\n")
	return f.err
}

func (f *fakeProvider) Observe(context.Context, *manifest.Manifest, []string) (string, error) {
	return f.live, nil
}

func (f *fakeProvider) Destroy(context.Context, io.Writer) error { return nil }

// fakeApplier stands in for Terraform: it records the roots it applied
// and returns the outputs the test gives it.
type fakeApplier struct {
	dirs        []string
	parallelism []int
	outputs     []terraform.Output
}

func (f *fakeApplier) Apply(_ context.Context, dir, workspace string, parallelism int, _ io.Writer) (terraform.Result, error) {
	f.dirs = append(f.dirs, dir+"@"+workspace)
	f.parallelism = append(f.parallelism, parallelism)
	return terraform.Result{Outputs: f.outputs}, nil
}
