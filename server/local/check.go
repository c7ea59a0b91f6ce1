package local

import (
	"context"
	"os"
	"os/exec"

	"github.com/nixmox/nixmox/server/provider"
)

var _ provider.Checker = (*Provider)(nil)

// Check implements provider.Checker: the local provider makes network
// namespaces, veths and a bridge (root and iproute2's ip) and starts
// nixmox-agent in them.
func (p *Provider) Check(context.Context) []string {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "the local provider makes network namespaces, a bridge and veth pairs, which needs root: run nixmox-server as root (sudo), or choose --provider none or proxmox")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		problems = append(problems, "the local provider needs iproute2's ip, which is not on PATH: apt-get install iproute2")
	}
	if _, err := p.agentBinary(); err != nil {
		problems = append(problems, "the local provider starts an agent per service, and "+err.Error()+": build it (make bin) or put it on PATH")
	}
	return problems
}
