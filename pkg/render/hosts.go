package render

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// Container is the LXC container the server creates for a service, in the
// Proxmox API's own field names (POST /nodes/{node}/lxc): the Proxmox
// provider sends exactly Params(), and `generate` writes the same
// (containers/<s>.json), so that a user reviews what will be created. The
// API URL and token never appear.
type Container struct {
	Node          string `json:"node,omitempty"` // where it is created: the URL, not a parameter
	VMID          int    `json:"vmid,omitempty"`
	Hostname      string `json:"hostname"`
	Cores         int    `json:"cores"`
	Memory        int    `json:"memory"`
	Swap          int    `json:"swap"`
	RootFS        string `json:"rootfs"`
	Net0          string `json:"net0"`
	Nameserver    string `json:"nameserver"`
	Searchdomain  string `json:"searchdomain"`
	SSHPublicKeys string `json:"ssh-public-keys,omitempty"`
	OnBoot        int    `json:"onboot"`
	Unprivileged  int    `json:"unprivileged"`
	Features      string `json:"features"`
	OSTemplate    string `json:"ostemplate"`
	Tags          string `json:"tags"`
	Pool          string `json:"pool,omitempty"`
}

// Placement is where containers go on Proxmox: the server's --proxmox-*
// flags (generate uses the defaults).
type Placement struct {
	Node, Storage, Template, Bridge, Pool string
}

// Defaults of the placement.
const (
	// ContainerStorage is the Proxmox storage of the root disk.
	ContainerStorage = "local-lvm"
	// ContainerTemplate is the stock NixOS LXC template the containers
	// start from (nixos-generators' proxmox-lxc image).
	ContainerTemplate = "local:vztmpl/nixos-system-x86_64-linux.tar.xz"
	// ContainerSwap is the swap of every container, in MiB.
	ContainerSwap = 512
	// ContainerPool is the resource pool containers are created in.
	ContainerPool = "nixmox"
	// OwnerTag marks a container as nixmox's: nothing without it is ever
	// changed, stopped or deleted.
	OwnerTag = "nixmox"
)

var pveTag = regexp.MustCompile(`^(?i:[a-z0-9_][a-z0-9_\-+.]*)$`)

// ContainerOf returns the container spec of a service.
func ContainerOf(m *manifest.Manifest, domain string, s *manifest.Service, place Placement) Container {
	n := m.Network
	_, bits, _ := strings.Cut(n.NetworkCIDR, "/")
	bridge := n.Bridge
	if bridge == "" {
		bridge = place.Bridge
	}
	net0 := "name=eth0,bridge=" + bridge + ",ip=" + s.IP + "/" + bits + ",gw=" + n.Gateway
	if n.VLANTag != 0 {
		net0 += ",tag=" + strconv.Itoa(n.VLANTag)
	}
	node := s.Node
	if node == "" {
		node = place.Node
	}
	tags := []string{OwnerTag}
	for _, t := range s.Tags {
		if t = strings.ToLower(t); pveTag.MatchString(t) && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags[1:])
	c := Container{
		Node:         node,
		VMID:         s.VMID,
		Hostname:     strings.SplitN(s.Hostname, ".", 2)[0],
		Cores:        s.Resources.Cores,
		Memory:       s.Resources.Memory,
		Swap:         ContainerSwap,
		RootFS:       place.Storage + ":" + strconv.Itoa(s.Resources.DiskGB),
		Net0:         net0,
		Nameserver:   n.DNSServer,
		Searchdomain: domain,
		OnBoot:       b2i(s.OnBoot),
		Unprivileged: 1,
		Features:     "nesting=1",
		OSTemplate:   place.Template,
		Tags:         strings.Join(tags, ";"),
		Pool:         place.Pool,
	}
	var keys []string
	for _, user := range slices.Sorted(maps.Keys(n.SSHKeys)) {
		keys = append(keys, n.SSHKeys[user]...)
	}
	c.SSHPublicKeys = strings.Join(keys, "\n")
	return c
}

// Params is the create request's parameters.
func (c Container) Params() map[string]string {
	p := map[string]string{
		"hostname": c.Hostname, "cores": strconv.Itoa(c.Cores), "memory": strconv.Itoa(c.Memory), "swap": strconv.Itoa(c.Swap),
		"rootfs": c.RootFS, "net0": c.Net0, "nameserver": c.Nameserver, "searchdomain": c.Searchdomain,
		"onboot": strconv.Itoa(c.OnBoot), "unprivileged": strconv.Itoa(c.Unprivileged), "features": c.Features,
		"ostemplate": c.OSTemplate, "tags": c.Tags,
	}
	if c.VMID != 0 {
		p["vmid"] = strconv.Itoa(c.VMID)
	}
	if c.SSHPublicKeys != "" {
		p["ssh-public-keys"] = c.SSHPublicKeys
	}
	if c.Pool != "" {
		p["pool"] = c.Pool
	}
	return p
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (r *renderer) containers() error {
	d := r.domain()
	return r.each(func(s *manifest.Service) error {
		return r.putJSON("containers/"+s.Name+".json", ContainerOf(r.m, d, s, Placement{
			Storage: ContainerStorage, Template: ContainerTemplate, Bridge: "vmbr0", Pool: ContainerPool}))
	})
}

// HostFacts is what a service's NixOS configuration needs to know about its
// place in the homelab (hosts/<s>.json, read with builtins.fromJSON).
// Secrets appear only by name: the agent receives their values.
type HostFacts struct {
	Service   string              `json:"service"`
	Core      bool                `json:"core"`
	IP        string              `json:"ip"`
	Prefix    int                 `json:"prefix_length"`
	Hostname  string              `json:"hostname"`
	Domain    string              `json:"domain"`
	Gateway   string              `json:"gateway"`
	DNS       []string            `json:"nameservers"`
	SSHKeys   map[string][]string `json:"ssh_keys"`
	Ports     []int               `json:"ports"`
	Databases []DBFacts           `json:"databases"`
	OIDC      []OIDCFacts         `json:"oidc"`
	Routes    []RouteFacts        `json:"routes"`
	Health    *manifest.Health    `json:"health,omitempty"`
	Needs     []string            `json:"needs"`
}

// DBFacts is how a service reaches one of its databases.
type DBFacts struct {
	Key      string   `json:"key"`
	Name     string   `json:"name"`
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	User     string   `json:"user"`
	Extra    []string `json:"additional_databases"`
	Mode     string   `json:"mode"`
	Password string   `json:"password_secret"`
}

// OIDCFacts is an OIDC client registration as the app needs it.
type OIDCFacts struct {
	Route         string   `json:"route"`
	ClientID      string   `json:"client_id"`
	ClientType    string   `json:"client_type"`
	Issuer        string   `json:"issuer"`
	RedirectURIs  []string `json:"redirect_uris"`
	Scopes        []string `json:"scopes"`
	UsernameClaim string   `json:"username_claim"`
	GroupsClaim   string   `json:"groups_claim"`
	ClientSecret  string   `json:"client_secret_secret,omitempty"`
}

// RouteFacts is one route the reverse proxy serves for the service.
type RouteFacts struct {
	Name     string `json:"name"`
	Domain   string `json:"domain"`
	Path     string `json:"path"`
	Upstream string `json:"upstream"`
	TLS      bool   `json:"tls"`
	Auth     string `json:"auth"`
}

func (r *renderer) hosts() error {
	domain := r.domain()
	bits, _ := strconv.Atoi(r.prefixLen())
	return r.each(func(s *manifest.Service) error {
		h := HostFacts{
			Service: s.Name, Core: s.Core, IP: s.IP, Prefix: bits, Hostname: s.Hostname,
			Domain: domain, Gateway: r.m.Network.Gateway, DNS: []string{r.m.Network.DNSServer},
			SSHKeys: r.m.Network.SSHKeys, Ports: s.Ports, Health: s.Interface.Health,
			Databases: []DBFacts{}, OIDC: []OIDCFacts{}, Routes: []RouteFacts{}, Needs: r.g.Needs(s.Name),
		}
		if h.SSHKeys == nil {
			h.SSHKeys = map[string][]string{}
		}
		if h.Ports == nil {
			h.Ports = []int{}
		}
		for _, nd := range s.Databases() {
			db := nd.DB
			key := nd.Key
			f := DBFacts{Key: key, Name: db.Name, Port: db.Port, User: db.Owner, Extra: db.AdditionalDBs, Mode: db.Mode}
			if f.Extra == nil {
				f.Extra = []string{}
			}
			if srv := db.Server(); srv != nil {
				f.Host = srv.IP
			}
			if db.Mode != "standalone" {
				f.Password = "db-" + db.Owner
			}
			h.Databases = append(h.Databases, f)
		}
		for _, o := range r.oidcClients(s) {
			h.OIDC = append(h.OIDC, o.facts(r))
		}
		if px := s.Interface.Proxy; px != nil {
			for _, rt := range px.Routes {
				auth := "none"
				if a := routeAuth(s, rt); a != nil {
					auth = a.Type
				}
				if rt.Authz && auth != "forward_auth" {
					auth = "forward_auth"
				}
				h.Routes = append(h.Routes, RouteFacts{Name: rt.Name, Domain: rt.Domain, Path: rt.Path,
					Upstream: upstream(s, rt.Upstream), TLS: rt.TLS, Auth: auth})
			}
		}
		return r.putJSON("hosts/"+s.Name+".json", h)
	})
}

// oidcClient is one OIDC client a service registers: the service's own
// auth, or a route's.
type oidcClient struct {
	svc      *manifest.Service
	route    string // "" for the service's own auth
	auth     *manifest.Auth
	provider *manifest.Service
}

// ClientID is the client id: the service's own client's is
// Service.OIDCClientID; a route's is its auth.oidc.client_id, else
// <service>-<route>.
func (o oidcClient) ClientID() string {
	if o.route == "" {
		return o.svc.OIDCClientID()
	}
	if id := o.auth.OIDC.ClientID; id != "" {
		return id
	}
	return o.svc.Name + "-" + o.route
}

// slug is the Authentik application slug, unique per client.
func (o oidcClient) slug() string {
	if o.route != "" {
		return o.svc.Name + "-" + o.route
	}
	return o.svc.Name
}

func (o oidcClient) facts(r *renderer) OIDCFacts {
	oi := o.auth.OIDC
	f := OIDCFacts{Route: o.route, ClientID: o.ClientID(), ClientType: oi.ClientType,
		Issuer:       "https://" + r.providerDomain(o.provider) + "/application/o/" + o.slug() + "/",
		RedirectURIs: oi.RedirectURIs, Scopes: oi.Scopes, UsernameClaim: oi.UsernameClaim, GroupsClaim: oi.GroupsClaim}
	if f.Scopes == nil {
		f.Scopes = []string{}
	}
	if oi.ClientType == "confidential" {
		f.ClientSecret = "oidc-" + o.slug()
	}
	return f
}

// providerDomain is where users reach the auth provider: its first proxy
// route's domain, or its hostname.
func (r *renderer) providerDomain(p *manifest.Service) string {
	if p.Interface.Proxy != nil && len(p.Interface.Proxy.Routes) > 0 {
		return p.Interface.Proxy.Routes[0].Domain
	}
	return p.Hostname
}

// oidcClients lists the service's OIDC clients: its own auth first, then
// its routes' in name order.
func (r *renderer) oidcClients(s *manifest.Service) []oidcClient {
	var out []oidcClient
	if a := s.Interface.Auth; a != nil && a.Type == "oidc" && a.OIDC != nil {
		out = append(out, oidcClient{s, "", a, r.authProvider(a)})
	}
	if px := s.Interface.Proxy; px != nil {
		for _, rt := range px.Routes {
			if a := rt.Auth; a != nil && a.Type == "oidc" && a.OIDC != nil {
				name := rt.Name
				if name == "" {
					name = "route"
				}
				out = append(out, oidcClient{s, name, a, r.authProvider(a)})
			}
		}
	}
	return out
}
