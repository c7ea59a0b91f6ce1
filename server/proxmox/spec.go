package proxmox

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	pve "github.com/Telmate/proxmox-api-go/proxmox"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// desired is the container a service should be.
func (p *Provider) desired(m *manifest.Manifest, svc *manifest.Service) (pve.ConfigLXC, error) {
	if svc.VMID == 0 {
		return pve.ConfigLXC{}, fmt.Errorf("%s.vmid is required with the proxmox provider", svc.Path())
	}
	network, err := netip.ParsePrefix(m.Network.NetworkCIDR)
	if err != nil {
		return pve.ConfigLXC{}, err
	}
	addr, err := netip.ParseAddr(svc.IP)
	if err != nil {
		return pve.ConfigLXC{}, err
	}
	id := pve.GuestID(svc.VMID)
	node := pve.NodeName(p.cfg.Node)
	name := pve.GuestName(strings.SplitN(svc.Hostname, ".", 2)[0])
	cores := pve.LxcCpuCores(svc.Resources.Cores)
	memory := pve.LxcMemory(svc.Resources.Memory)
	size := pve.LxcMountSize(svc.Resources.DiskGB * 1024 * 1024)
	storage := p.cfg.Storage
	bridge := p.cfg.Bridge
	ifName := pve.LxcNetworkName("eth0")
	cidr := pve.IPv4CIDR(netip.PrefixFrom(addr, network.Bits()).String())
	gw := pve.IPv4Address(m.Network.Gateway)
	onboot := svc.OnBoot
	privileged := false
	nesting := true
	ns, err := netip.ParseAddr(m.Network.DNSServer)
	if err != nil {
		return pve.ConfigLXC{}, err
	}
	nameservers := []netip.Addr{ns}
	domain := m.Network.Domain
	net0 := pve.LxcNetwork{Bridge: &bridge, Name: &ifName, IPv4: &pve.LxcIPv4{Address: &cidr, Gateway: &gw}}
	if m.Network.VLANTag != 0 {
		vlan := pve.Vlan(m.Network.VLANTag)
		net0.NativeVlan = &vlan
	}
	var keys []pve.AuthorizedKey
	// Proxmox installs keys for root: every user's keys go there.
	for _, user := range slices.Sorted(maps.Keys(m.Network.SSHKeys)) {
		for _, k := range m.Network.SSHKeys[user] {
			var key pve.AuthorizedKey
			if err := key.Parse([]byte(k)); err != nil {
				return pve.ConfigLXC{}, fmt.Errorf("network.ssh_keys.%s: %w", user, err)
			}
			keys = append(keys, key)
		}
	}
	state := pve.PowerStateStopped
	if svc.Start {
		state = pve.PowerStateRunning
	}
	tmpl := strings.SplitN(p.cfg.Template, ":", 2)
	if len(tmpl) != 2 {
		return pve.ConfigLXC{}, fmt.Errorf("the template %q is not STORAGE:vztmpl/FILE", p.cfg.Template)
	}
	return pve.ConfigLXC{
		ID: &id, Node: &node, Name: &name,
		CPU:             &pve.LxcCPU{Cores: &cores},
		Memory:          &memory,
		BootMount:       &pve.LxcBootMount{SizeInKibibytes: &size, Storage: &storage},
		Networks:        pve.LxcNetworks{pve.LxcNetworkID0: net0},
		DNS:             &pve.GuestDNS{NameServers: &nameservers, SearchDomain: &domain},
		Features:        &pve.LxcFeatures{Unprivileged: &pve.UnprivilegedFeatures{Nesting: &nesting}},
		Privileged:      &privileged,
		StartAtNodeBoot: &onboot,
		State:           &state,
		CreateOptions: &pve.LxcCreateOptions{
			OsTemplate:    &pve.LxcTemplate{Storage: tmpl[0], File: tmpl[1]},
			PublicSSHkeys: keys,
		},
	}, nil
}

// diff names what differs between the container and the manifest, in the
// fields the provider manages.
func diff(cur, want pve.ConfigLXC) []string {
	var out []string
	add := func(field string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, fmt.Sprintf("%s %v → %v", field, a, b))
		}
	}
	deref := func(v any) any {
		switch v := v.(type) {
		case *pve.GuestName:
			if v != nil {
				return *v
			}
		case *pve.LxcMemory:
			if v != nil {
				return *v
			}
		case *bool:
			if v != nil {
				return *v
			}
		}
		return nil
	}
	add("hostname", deref(cur.Name), deref(want.Name))
	add("memory", deref(cur.Memory), deref(want.Memory))
	if cur.CPU != nil && want.CPU != nil && cur.CPU.Cores != nil && want.CPU.Cores != nil {
		add("cores", *cur.CPU.Cores, *want.CPU.Cores)
	}
	add("onboot", deref(cur.StartAtNodeBoot), deref(want.StartAtNodeBoot))
	cn, wn := cur.Networks[pve.LxcNetworkID0], want.Networks[pve.LxcNetworkID0]
	if cn.IPv4 != nil && wn.IPv4 != nil {
		if cn.IPv4.Address != nil && wn.IPv4.Address != nil {
			add("ip", *cn.IPv4.Address, *wn.IPv4.Address)
		}
		if cn.IPv4.Gateway != nil && wn.IPv4.Gateway != nil {
			add("gateway", *cn.IPv4.Gateway, *wn.IPv4.Gateway)
		}
	} else if (cn.IPv4 == nil) != (wn.IPv4 == nil) {
		out = append(out, "net0 ipv4")
	}
	if cn.Bridge != nil && wn.Bridge != nil {
		add("bridge", *cn.Bridge, *wn.Bridge)
	}
	return out
}
