package proxmox

import (
	"context"
	"fmt"
	"strings"

	pve "github.com/Telmate/proxmox-api-go/proxmox"

	"github.com/nixmox/nixmox/server/provider"
)

var _ provider.Checker = (*Provider)(nil)

// Check implements provider.Checker: the settings are there, the API
// answers with the token, and the template is in its storage on the node.
func (p *Provider) Check(ctx context.Context) []string {
	var problems []string
	if p.cfg.Node == "" {
		problems = append(problems, "the Proxmox provider needs the node containers are made on: --proxmox-node")
	}
	storage, file, ok := strings.Cut(p.cfg.Template, ":")
	if !ok || storage == "" || !strings.HasPrefix(file, "vztmpl/") {
		problems = append(problems, fmt.Sprintf("the Proxmox provider needs the NixOS LXC template as STORAGE:vztmpl/FILE (--proxmox-template), not %q", p.cfg.Template))
	}
	c, err := p.connect()
	if err != nil {
		return append(problems, err.Error())
	}
	v, err := c.GetVersion(ctx)
	if err != nil {
		return append(problems, fmt.Sprintf("the Proxmox API at %s does not answer with the token %s: %v", p.cfg.URL, p.cfg.TokenID, err))
	}
	if v.Major < 8 {
		problems = append(problems, fmt.Sprintf("the Proxmox API at %s is version %d.%d; nixmox needs Proxmox VE 8", p.cfg.URL, v.Major, v.Minor))
	}
	if len(problems) > 0 {
		return problems
	}
	content, err := c.GetStorageContent(ctx, storage, pve.NodeName(p.cfg.Node))
	if err != nil {
		return append(problems, fmt.Sprintf("cannot list the templates of storage %q on node %q: %v", storage, p.cfg.Node, err))
	}
	items, _ := content["data"].([]any)
	for _, it := range items {
		if m, _ := it.(map[string]any); m["volid"] == p.cfg.Template {
			return nil
		}
	}
	return append(problems, fmt.Sprintf("the template %s is not in storage %q on node %q: download a NixOS LXC image there (pveam, or the web UI's CT Templates)", p.cfg.Template, storage, p.cfg.Node))
}
