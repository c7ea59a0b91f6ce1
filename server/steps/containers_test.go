package steps

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/pkg/render"
)

// TestContainersEnsuresEveryServiceThroughTheProvider: tf:infra asks the
// provider for the rollout's services (and, for the whole manifest, to
// remove the others), with an enroller for new containers; a provider
// error names the provider; no infra root means no Terraform.
func TestContainersEnsuresEveryServiceThroughTheProvider(t *testing.T) {
	m := testManifest(t, `"a": {"ip": "10.9.0.10", "hostname": "a.lab.test"}, "b": {"ip": "10.9.0.11", "hostname": "b.lab.test"}`)
	p := &fakeProvider{}
	var tokens []string
	c := &Containers{Provider: p, Enroll: func(_ context.Context, svc string) ([]byte, error) {
		tokens = append(tokens, svc)
		return []byte(`{"token": "t"}`), nil
	}}
	j := &Job{M: m, Services: []string{"a", "b"}, All: true}
	if err := c.Run(testCtx(t), j, step(plan.TFInfra, "")); err != nil {
		t.Fatal(err)
	}
	if len(p.ensured) != 1 || !slices.Equal(p.ensured[0], []string{"a", "b"}) || !p.all[0] {
		t.Errorf("ensured %v (all %v), want a and b with all", p.ensured, p.all)
	}
	if !slices.Equal(tokens, []string{"a", "b"}) {
		t.Errorf("enrolled %v", tokens)
	}
	p.err = errors.New("no space left on storage")
	err := c.Run(testCtx(t), j, step(plan.TFInfra, ""))
	if err == nil || err.Error() != "fake provider: no space left on storage" {
		t.Errorf("a provider failure: %v", err)
	}
	// An infra root needs Terraform; without one the step says so.
	p.err = nil
	j.Tree = render.Tree{"terraform/infra/main.tf.json": []byte(`{}`)}
	c.Terraform = &Terraform{}
	if err := c.Run(testCtx(t), j, step(plan.TFInfra, "")); !errors.Is(err, ErrNoTerraform) {
		t.Errorf("an infra root without Terraform: %v", err)
	}
}

// TestContainersFingerprintSeesDrift: the provider's view of the live
// containers is part of tf:infra's fingerprint, so drift runs it again
// (and the step is fingerprinted again after it repaired it); a service's
// config outside the containers' specs is not.
func TestContainersFingerprintSeesDrift(t *testing.T) {
	m := testManifest(t, `"a": {"ip": "10.9.0.10", "hostname": "a.lab.test"}`)
	j := &Job{M: m, Services: []string{"a"}, Tree: render.Tree{"containers/a.json": []byte(`{"ip": "10.9.0.10"}`)}}
	p := &fakeProvider{live: "a: agent=true"}
	c := &Containers{Provider: p}
	s := step(plan.TFInfra, "")
	fp := func() string {
		f, err := c.Fingerprint(testCtx(t), j, s)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	healthy := fp()
	p.live = "a: agent=false"
	if fp() == healthy {
		t.Error("a dead agent did not change tf:infra's fingerprint")
	}
	p.live = "a: agent=true"
	if fp() != healthy {
		t.Error("the repaired containers did not give the first fingerprint back")
	}
	j.Tree["generated/hosts/a.json"] = []byte(`{"other": true}`)
	if fp() != healthy {
		t.Error("a file outside the containers' specs changed tf:infra's fingerprint")
	}
	j.Tree["containers/a.json"] = []byte(`{"ip": "10.9.0.10", "memory": 2048}`)
	if fp() == healthy {
		t.Error("a changed container spec did not change tf:infra's fingerprint")
	}
	if !c.Refreshes() || (&Containers{}).Refreshes() {
		t.Error("only a step with a provider observes live state it repairs")
	}
}

// TestContainersDescribeNamesChanges: a dry run of tf:infra names each
// container that would change, not those that match.
func TestContainersDescribeNamesChanges(t *testing.T) {
	m := testManifest(t, `"a": {"ip": "10.9.0.10", "hostname": "a.lab.test"}`)
	p := &fakeProvider{live: "a: []\nb: [memory 1024 -> 2048]\nc: agent=true\nd: missing\n"}
	got := (&Containers{Provider: p}).Describe(testCtx(t), &Job{M: m}, step(plan.TFInfra, ""))
	if got != "b: [memory 1024 -> 2048]; d: missing" {
		t.Errorf("described %q", got)
	}
	if strings.TrimSpace((&Containers{}).Describe(testCtx(t), &Job{M: m}, step(plan.TFInfra, ""))) != "" {
		t.Error("without a provider there is nothing to describe")
	}
}
