// Package provider is the interface between the rollout controller and
// whatever makes the containers services run in: the embedded local
// provider (network namespaces on this machine) or Proxmox.
package provider

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// Enroller gives a new container what its agent enrolls with: the
// one-time token and the CA, as the JSON of agent.EnrollFile.
type Enroller func(ctx context.Context, service string) ([]byte, error)

// Provider creates, updates and destroys containers.
type Provider interface {
	// Name is how the provider is chosen (--provider).
	Name() string
	// Ensure makes the container of every named service of m exist, match
	// the manifest and run, with its agent started and enrolled; with all
	// set (the whole manifest was selected) it also removes the containers
	// of services that are no longer in m. What it does goes to log.
	Ensure(ctx context.Context, m *manifest.Manifest, services []string, all bool, enroll Enroller, log io.Writer) error
	// Observe describes the live state of the named services' containers
	// as far as Ensure manages it; it changes when they drift (an agent
	// died, a container was removed by hand), so tf:infra runs again and
	// repairs them.
	Observe(ctx context.Context, m *manifest.Manifest, services []string) (string, error)
	// Destroy removes everything the provider created.
	Destroy(ctx context.Context, log io.Writer) error
}

// Checker is a provider that can say, before the server serves, what it
// lacks to work at all: privileges, programs, an API that answers.
type Checker interface {
	// Check returns one sentence per problem, each saying how to fix it;
	// nil when the provider can work.
	Check(ctx context.Context) []string
}

// Locator is a provider whose containers live on machines of their own (a
// cluster's nodes): it says where each service's container is, as last
// seen.
type Locator interface {
	// Nodes returns the node of each service's container it knows.
	Nodes() map[string]string
}

// AgentBinary is the nixmox-agent a provider starts or pushes: given, else
// the one beside this program, else nixmox-agent on PATH.
func AgentBinary(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "nixmox-agent")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("nixmox-agent")
	if err != nil {
		return "", errors.New("nixmox-agent is neither beside nixmox-server nor on PATH")
	}
	return path, nil
}
