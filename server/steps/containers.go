package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nixmox/nixmox/pkg/plan"
	"github.com/nixmox/nixmox/server/provider"
)

// Containers runs tf:infra: the provider makes every selected service's
// container (and, for the whole manifest, removes those of services that
// left it), then the infra Terraform root, if the manifest has one, is
// applied.
type Containers struct {
	// Provider makes the containers; nil means they exist already.
	Provider provider.Provider
	// Enroll gives a new container what its agent enrolls with.
	Enroll provider.Enroller
	// Terraform applies the infra root.
	Terraform *Terraform
}

// Fingerprint implements Runner: the network and the containers' specs as
// rendered (not the whole manifest: a service's config is not
// infrastructure), the containers as the provider sees them now (so that
// drift — an agent died, a container was removed by hand — runs the step
// again), and the infra root.
func (c *Containers) Fingerprint(ctx context.Context, j *Job, s plan.Step) (string, error) {
	h := newHash(s)
	if j.Tree != nil {
		data, err := json.Marshal(j.M.Network)
		if err != nil {
			return "", err
		}
		h.Write(data)
		for _, p := range j.Tree.Paths() {
			if strings.HasPrefix(p, "containers/") {
				fmt.Fprintf(h, "file %s %d\n", p, len(j.Tree[p]))
				h.Write(j.Tree[p])
			}
		}
	} else if err := hashManifest(h, j, s); err != nil {
		return "", err
	}
	if c.Provider != nil {
		live, err := c.Provider.Observe(ctx, j.M, j.Services)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "containers %s\n%s", c.Provider.Name(), live)
	}
	if err := hashRoot(h, j, s); err != nil {
		return "", err
	}
	return sum(h), nil
}

// Run implements Runner.
func (c *Containers) Run(ctx context.Context, j *Job, s plan.Step) error {
	if c.Provider != nil {
		log, done := j.StepLog(s.ID)
		err := c.Provider.Ensure(ctx, j.M, j.Services, j.All, c.Enroll, log)
		done()
		if err != nil {
			return fmt.Errorf("%s provider: %w", c.Provider.Name(), err)
		}
	}
	if _, ok := j.Tree["terraform/infra/main.tf.json"]; !ok {
		return nil
	}
	return c.Terraform.Run(ctx, j, s)
}

// Refreshes reports whether the step's fingerprint must be computed again
// after it ran: with a provider, it includes live state the step repairs.
func (c *Containers) Refreshes() bool { return c.Provider != nil }

// Describe implements Describer: what the provider would change,
// container by container.
func (c *Containers) Describe(ctx context.Context, j *Job, _ plan.Step) string {
	if c.Provider == nil {
		return ""
	}
	live, err := c.Provider.Observe(ctx, j.M, j.Services)
	if err != nil {
		return ""
	}
	var changes []string
	for _, l := range strings.Split(strings.TrimSpace(live), "\n") {
		if l != "" && !strings.HasSuffix(l, ": []") && !strings.Contains(l, "agent=true") {
			changes = append(changes, l)
		}
	}
	return strings.Join(changes, "; ")
}
