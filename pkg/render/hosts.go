package render

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
)

// Container is the LXC container the server creates for a service, in the
// Proxmox API's own field names (POST /nodes/{node}/lxc), so that a user can
// review exactly what will be created. The API URL and token never appear.
type Container struct {
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
	Start         int    `json:"start"`
	Unprivileged  int    `json:"unprivileged"`
	Features      string `json:"features"`
	OSTemplate    string `json:"ostemplate"`
	Tags          string `json:"tags,omitempty"`
}

// Defaults of what the manifest does not (yet) say.
const (
	// ContainerStorage is the Proxmox storage of the root disk.
	ContainerStorage = "local-lvm"
	// ContainerTemplate is the NixOS LXC template (with nixmox-agent) the
	// containers start from.
	ContainerTemplate = "local:vztmpl/nixos-nixmox.tar.xz"
	// ContainerSwap is the swap of every container, in MiB.
	ContainerSwap = 512
)

// ContainerOf returns the container spec of a service.
func ContainerOf(m *manifest.Manifest, domain string, s *manifest.Service) Container {
	n := m.Network
	_, bits, _ := strings.Cut(n.NetworkCIDR, "/")
	net0 := "name=eth0,bridge=" + n.Bridge + ",ip=" + s.IP + "/" + bits + ",gw=" + n.Gateway + ",firewall=1"
	if n.VLANTag != 0 {
		net0 += ",tag=" + strconv.Itoa(n.VLANTag)
	}
	c := Container{
		VMID:         s.VMID,
		Hostname:     s.Hostname,
		Cores:        s.Resources.Cores,
		Memory:       s.Resources.Memory,
		Swap:         ContainerSwap,
		RootFS:       ContainerStorage + ":" + strconv.Itoa(s.Resources.DiskGB),
		Net0:         net0,
		Nameserver:   n.DNSServer,
		Searchdomain: domain,
		OnBoot:       b2i(s.OnBoot),
		Start:        b2i(s.Start),
		Unprivileged: 1,
		Features:     "nesting=1",
		OSTemplate:   ContainerTemplate,
		Tags:         strings.Join(s.Tags, ";"),
	}
	var keys []string
	for _, user := range slices.Sorted(maps.Keys(n.SSHKeys)) {
		keys = append(keys, n.SSHKeys[user]...)
	}
	c.SSHPublicKeys = strings.Join(keys, "\n")
	return c
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
		return r.putJSON("containers/"+s.Name+".json", ContainerOf(r.m, d, s))
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

// ClientID is the client id: the manifest's, or the service (and route)
// name.
func (o oidcClient) ClientID() string {
	if id := o.auth.OIDC.ClientID; id != "" {
		return id
	}
	if o.route != "" {
		return o.svc.Name + "-" + o.route
	}
	return o.svc.Name
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
