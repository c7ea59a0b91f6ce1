package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/nixmox/nixmox/pkg/nix"
	"github.com/nixmox/nixmox/server/local"
	"github.com/nixmox/nixmox/server/provider"
	"github.com/nixmox/nixmox/server/proxmox"
	"github.com/nixmox/nixmox/server/terraform"
)

// Finding is what one check of the server's ground found: OK says what
// works (a version, a path); Problems, one sentence each, say what does
// not and how to fix it.
type Finding struct {
	Name     string // nix, terraform, provider
	OK       string
	Problems []string
}

// Check looks, before anything is served, at what the server needs to run
// a rollout with cfg: Nix can evaluate and build, terraform runs, and the
// provider has what it needs (root and iproute2 for local; an API that
// answers, the node and the template for proxmox). The checks run at once;
// the findings come in a fixed order.
func Check(ctx context.Context, cfg Config) []Finding {
	findings := []Finding{{Name: "nix"}, {Name: "terraform"}, {Name: "provider"}}
	var wg sync.WaitGroup
	wg.Go(func() { findings[0] = checkNix(ctx) })
	wg.Go(func() { findings[1] = checkTerraform(ctx, cfg) })
	wg.Go(func() { findings[2] = checkProvider(ctx, cfg) })
	wg.Wait()
	return findings
}

func checkNix(ctx context.Context) Finding {
	f := Finding{Name: "nix"}
	if f.Problems = nix.CheckPrograms(nix.ServerPrograms); f.Problems != nil {
		return f
	}
	if err := nix.CheckBuild(ctx); err != nil {
		f.Problems = []string{err.Error()}
		return f
	}
	path, _ := exec.LookPath("nix-build")
	f.OK = "evaluates and builds (" + path + ")"
	return f
}

func checkTerraform(ctx context.Context, cfg Config) Finding {
	f := Finding{Name: "terraform"}
	v, path, err := (&terraform.Runner{Binary: cfg.Terraform}).Version(ctx)
	if err != nil {
		f.Problems = []string{err.Error()}
		return f
	}
	f.OK = filepath.Base(path) + " " + v + " (" + path + ")"
	return f
}

func checkProvider(ctx context.Context, cfg Config) Finding {
	f := Finding{Name: "provider"}
	p, err := newProvider(cfg, 0)
	if err != nil {
		f.Problems = []string{err.Error()}
		return f
	}
	if p == nil {
		f.OK = "none: the containers exist already"
		return f
	}
	if c, ok := p.(provider.Checker); ok {
		f.Problems = c.Check(ctx)
	}
	if f.Problems == nil {
		f.OK = p.Name()
	}
	return f
}

// newProvider returns the provider cfg names (nil for none); agentPort is
// the agent listener's port, which local agents are told.
func newProvider(cfg Config, agentPort int) (provider.Provider, error) {
	switch cfg.Provider {
	case "", "none":
		return nil, nil
	case "local":
		return &local.Provider{Dir: filepath.Join(cfg.StateDir, "local"), Bridge: cfg.LocalBridge, DataDir: cfg.LocalDataDir,
			NetnsPrefix: cfg.LocalNetnsPrefix, ServerPort: agentPort}, nil
	case "proxmox":
		pc := cfg.Proxmox
		pc.Dir = filepath.Join(cfg.StateDir, "proxmox")
		if pc.ServerAddress == "" {
			// The address containers reach the server by: --host, else the
			// listener's own host.
			host, _, _ := net.SplitHostPort(cfg.AgentListen)
			if len(cfg.AgentHosts) > 0 {
				host = cfg.AgentHosts[0]
			}
			if host != "" && !net.ParseIP(host).IsUnspecified() {
				pc.ServerAddress = net.JoinHostPort(host, strconv.Itoa(agentPort))
			}
		}
		return proxmox.New(pc), nil
	}
	return nil, fmt.Errorf("unknown provider %q: none, local or proxmox", cfg.Provider)
}

// problems lists the findings' problems.
func problems(findings []Finding) []string {
	var out []string
	for _, f := range findings {
		out = append(out, f.Problems...)
	}
	return out
}

// CheckError is a server that cannot serve: one sentence per problem.
type CheckError struct{ Problems []string }

func (e *CheckError) Error() string {
	n := plural(len(e.Problems), "problem")
	var b strings.Builder
	fmt.Fprintf(&b, "refusing to serve: %s (nixmox-server check shows the same)", n)
	for _, p := range e.Problems {
		b.WriteString("\n  - " + strings.ReplaceAll(p, "\n", "\n    "))
	}
	return b.String()
}

// writeFindings prints the findings, a line each: NAME ok: ... or NAME
// problem: ... (a line per problem, continued lines indented).
func writeFindings(w io.Writer, findings []Finding) {
	for _, f := range findings {
		if len(f.Problems) == 0 {
			fmt.Fprintf(w, "%-9s ok: %s\n", f.Name, f.OK)
			continue
		}
		for _, p := range f.Problems {
			fmt.Fprintf(w, "%-9s problem: %s\n", f.Name, strings.ReplaceAll(p, "\n", "\n          "))
		}
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
