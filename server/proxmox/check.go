package proxmox

import (
	"context"
	"fmt"
	"net/url"
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
	// The template on the default node and on every node given its own.
	nodes := []string{p.cfg.Node}
	for node := range p.cfg.TemplateOn {
		if node != p.cfg.Node {
			nodes = append(nodes, node)
		}
	}
	for _, node := range nodes {
		if msg := templateMissing(ctx, c, node, p.templateOn(node)); msg != "" {
			problems = append(problems, msg)
		}
	}
	return append(problems, p.checkPrivileges(ctx, c)...)
}

// templateMissing says why a node lacks its template ("" when it has it).
func templateMissing(ctx context.Context, c *pve.Client, node, template string) string {
	storage, file, ok := strings.Cut(template, ":")
	if !ok || storage == "" || !strings.HasPrefix(file, "vztmpl/") {
		return fmt.Sprintf("the template of node %s must be STORAGE:vztmpl/FILE, not %q", node, template)
	}
	content, err := c.GetStorageContent(ctx, storage, pve.NodeName(node))
	if err != nil {
		return fmt.Sprintf("cannot list the templates of storage %q on node %q: %v", storage, node, err)
	}
	items, _ := content["data"].([]any)
	for _, it := range items {
		if m, _ := it.(map[string]any); m["volid"] == template {
			return ""
		}
	}
	return fmt.Sprintf("the template %s is not in storage %q on node %q: download a NixOS LXC image there (pveam, or the web UI's CT Templates)", template, storage, node)
}

// Privileges are what the provider's API token needs, by ACL path
// (docs/proxmox.md).
func (p *Provider) Privileges() map[string][]string {
	need := map[string][]string{
		"/pool/" + p.cfg.Pool: {"VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory",
			"VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt"},
		"/storage/" + p.cfg.Storage:               {"Datastore.AllocateSpace", "Datastore.Audit"},
		"/sdn/zones/localnetwork/" + p.cfg.Bridge: {"SDN.Use"},
	}
	for _, storage := range p.cfg.StorageOn {
		need["/storage/"+storage] = []string{"Datastore.AllocateSpace", "Datastore.Audit"}
	}
	return need
}

// checkPrivileges asks /access/permissions what the token may do on each
// path and names what is missing.
func (p *Provider) checkPrivileges(ctx context.Context, c *pve.Client) []string {
	var problems []string
	need := p.Privileges()
	for _, path := range sortedKeys(need) {
		data, err := c.GetItemConfigMapStringInterface(ctx, "/access/permissions?path="+url.QueryEscape(path), "permissions", path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("cannot read the API token's permissions on %s: %v", path, err))
			continue
		}
		have, _ := data[path].(map[string]any)
		var missing []string
		for _, priv := range need[path] {
			if v, ok := have[priv]; !ok || fmt.Sprint(v) == "0" {
				missing = append(missing, priv)
			}
		}
		if len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("the API token %s lacks %s on %s: grant them (pveum acl modify %s --tokens '%s' --roles ROLE, with a role that has them)",
				p.cfg.TokenID, strings.Join(missing, ", "), path, path, p.cfg.TokenID))
		}
	}
	return problems
}
