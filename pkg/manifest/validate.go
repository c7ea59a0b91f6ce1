package manifest

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
)

// The patterns below keep every name that ends up in a generated file, a
// shell command line or a Terraform address within a small, safe alphabet.
// That is the first line of defence against injection; generators quote as
// well. They are compiled on first use: most commands never need them, and
// every command starts faster.
var (
	tfIdentRE   = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_-]*$`)
	tfAddressRE = lazyRegexp(`^[A-Za-z0-9_.\-\[\]"]+$`)
	unixUserRE  = lazyRegexp(`^[a-z_][a-z0-9_-]{0,31}$`)
	bridgeRE    = lazyRegexp(`^[A-Za-z0-9_.-]{1,15}$`)
	baseDNRE    = lazyRegexp(`^[A-Za-z]+=[A-Za-z0-9 _.-]+(,[A-Za-z]+=[A-Za-z0-9 _.-]+)*$`)
	sshKeyRE    = lazyRegexp(`^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]*)?$`)
)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// serviceNamePattern is isServiceName as a regular expression, for the
// JSON Schema.
const serviceNamePattern = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`

// Dependency is one edge of the dependency graph: the service needs Service
// to be healthy first.
type Dependency struct {
	// Service is the name of the service depended on.
	Service string
	from    *Service // the service that depends
	at      depSite  // where the first reason comes from
	mask    uint8    // the reasons, as reasonBit bits
}

// depSite is the field of the depending service a dependency comes from,
// kept in a few bytes; Location makes it a Path when one is needed.
type depSite struct {
	field uint8 // one of the at* constants
	index int32 // depends_on index, route (in Proxy.Routes) or database (in Databases())
}

// The fields a dependency can come from.
const (
	atDependsOn         uint8 = iota // depends_on[index]
	atAuthProvider                   // interface.auth.provider
	atForwardAuth                    // interface.auth.forward_auth_upstream
	atRouteAuthProvider              // the route's auth.provider
	atRouteForwardAuth               // the route's auth.forward_auth_upstream
	atRouteAuthz                     // the route's authz
	atDBHost                         // the database's host
	atReverseProxy                   // interface.proxy
	atLDAPOutpost                    // network.outposts.ldap.service
	atRADIUSOutpost                  // network.outposts.radius.service
)

// reasons in the order Reasons lists them.
var reasons = []string{"depends_on", "auth provider", "database host", "forward_auth upstream", "reverse proxy"}

// Reasons say why, the explicit one first: "depends_on", "auth provider",
// "database host", "forward_auth upstream", "reverse proxy".
func (d Dependency) Reasons() []string {
	var out []string
	for _, r := range reasons {
		if d.Has(r) {
			out = append(out, r)
		}
	}
	return out
}

// Location is the manifest field the first reason comes from, e.g.
// services.vaultwarden.depends_on[2].
func (d Dependency) Location() Path {
	s, i := d.from, int(d.at.index)
	p := s.Path()
	switch d.at.field {
	case atDependsOn:
		return p.Key("depends_on").Index(i)
	case atAuthProvider:
		return p.Key("interface").Key("auth").Key("provider")
	case atForwardAuth:
		return p.Key("interface").Key("auth").Key("forward_auth_upstream")
	case atRouteAuthProvider:
		return s.routePath(i).Key("auth").Key("provider")
	case atRouteForwardAuth:
		return s.routePath(i).Key("auth").Key("forward_auth_upstream")
	case atRouteAuthz:
		return s.routePath(i).Key("authz")
	case atDBHost:
		return s.Databases()[i].Path().Key("host")
	case atReverseProxy:
		return p.Key("interface").Key("proxy")
	case atLDAPOutpost:
		return Path{"network", "outposts", "ldap", "service"}
	case atRADIUSOutpost:
		return Path{"network", "outposts", "radius", "service"}
	}
	panic("manifest: unknown dependency site")
}

// routePath is the path of the service's route i (in Proxy.Routes).
func (s *Service) routePath(i int) Path {
	p := s.Path().Key("interface").Key("proxy")
	if px := s.Interface.Proxy; px.Named {
		p = p.Key(px.Routes[i].Name)
	}
	return p
}

// Has reports whether reason is among the dependency's reasons.
func (d Dependency) Has(reason string) bool { return d.mask&reasonBit(reason) != 0 }

// String is "name (reason, reason)".
func (d Dependency) String() string {
	return fmt.Sprintf("%s (%s)", d.Service, strings.Join(d.Reasons(), ", "))
}

// validator holds what the checks share.
type validator struct {
	m       *Manifest
	diags   Diagnostics
	cidr    netip.Prefix
	byName  map[string]*Service // enabled services
	all     map[string]*Service // every defined service, enabled or not
	byIP    map[string]*Service
	byHost  map[string]*Service
	names   []string // every defined service name, for suggestions
	dbHosts []*Service
	deps    []Dependency      // a worker's scratch for a service's dependencies
	runners map[string]string // the outposts' services, by kind (outpostRunners)
}

func (m *Manifest) validate() Diagnostics {
	n := len(m.CoreServices) + len(m.Services) // the indexes' sizes, known up front
	v := &validator{
		m:      m,
		byName: make(map[string]*Service, n),
		all:    make(map[string]*Service, n),
		byIP:   make(map[string]*Service, n),
		byHost: make(map[string]*Service, n),
		names:  make([]string, 0, n),
	}
	v.network()
	v.collect()
	v.outpostRunners()
	v.globals()
	enabled := m.Enabled()
	v.perService(enabled)
	v.duplicates(enabled)
	v.phases()
	return v.diags
}

// perService checks each service and resolves its dependencies. Services
// are independent here — the indexes they read were completed by collect,
// and each writes only its own dependencies and diagnostics — so a large
// manifest is checked on every core.
func (v *validator) perService(enabled []*Service) {
	workers := min(runtime.GOMAXPROCS(0), len(enabled)/512+1)
	chunk := (len(enabled) + workers - 1) / workers
	parts := make([]Diagnostics, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := min(w*chunk, len(enabled)), min((w+1)*chunk, len(enabled))
		wg.Go(func() {
			wv := *v // shares the read-only indexes
			wv.diags = nil
			for _, s := range enabled[lo:hi] {
				wv.service(s)
				wv.dependencies(s)
			}
			parts[w] = wv.diags
		})
	}
	wg.Wait()
	for _, p := range parts {
		v.diags = append(v.diags, p...)
	}
}

// Enabled returns the enabled services, core and others, sorted by name.
func (m *Manifest) Enabled() []*Service {
	if m.enabled != nil {
		return m.enabled
	}
	out := make([]*Service, 0, len(m.CoreServices)+len(m.Services))
	for _, sec := range []map[string]*Service{m.CoreServices, m.Services} {
		for _, s := range sec {
			if s != nil && s.Enable {
				out = append(out, s)
			}
		}
	}
	slices.SortFunc(out, func(a, b *Service) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return boolRank(b.Core) - boolRank(a.Core) // a name in both sections: the core one first
	})
	m.enabled = out
	m.byName = make(map[string]*Service, len(out))
	for _, s := range out {
		if _, dup := m.byName[s.Name]; !dup {
			m.byName[s.Name] = s
		}
	}
	return out
}

// Service returns the enabled service called name, or nil.
func (m *Manifest) Service(name string) *Service {
	m.Enabled()
	return m.byName[name]
}

// ClientIDVariable is the Terraform variable a service may pass its
// modules its OIDC client id in; see OIDCClientID.
const ClientIDVariable = "oidc_client_id"

// OIDCClientID is the client id of the service's own OIDC client (its
// interface.auth): auth.oidc.client_id, else the string the service passes
// its Terraform modules as the variable oidc_client_id, else the service's
// name. One id everywhere: Authentik's provider, the facts its system gets
// and its modules' variable.
func (s *Service) OIDCClientID() string {
	if a := s.Interface.Auth; a != nil && a.OIDC != nil && a.OIDC.ClientID != "" {
		return a.OIDC.ClientID
	}
	if tf := s.Interface.Terraform; tf != nil {
		if id, ok := tf.Variables[ClientIDVariable].(string); ok && id != "" {
			return id
		}
	}
	return s.Name
}

// Path returns the manifest path of the service, e.g. services.vaultwarden.
func (s *Service) Path() Path {
	if s.path == nil {
		sec := "services"
		if s.Core {
			sec = "core_services"
		}
		// Full capacity: Key and Index always copy, so the cached path is
		// never written through.
		s.path = Path{sec, s.Name}[:2:2]
	}
	return s.path
}

// Dependencies returns the services s needs, explicit (depends_on) and
// implicit, sorted by name; each name appears once, with the first reason
// found. It is filled in by validation.
func (s *Service) Dependencies() []Dependency { return s.deps }

func (v *validator) network() {
	n := &v.m.Network
	p := Path{"network"}
	if n.NetworkCIDR == "" {
		v.diags.Addf(p.Key("network_cidr"), "is required")
	} else if pfx, err := netip.ParsePrefix(n.NetworkCIDR); err != nil || !pfx.Addr().Is4() {
		v.diags.Addf(p.Key("network_cidr"), "%q is not an IPv4 network in CIDR notation (e.g. 10.40.0.0/24)", n.NetworkCIDR)
	} else if pfx.Masked() != pfx {
		v.diags.Addf(p.Key("network_cidr"), "%q has host bits set; did you mean %q?", n.NetworkCIDR, pfx.Masked().String())
	} else {
		v.cidr = pfx
	}
	v.ipInNetwork(p, "gateway", n.Gateway, true)
	v.ipInNetwork(p, "dns_server", n.DNSServer, true)
	if n.Domain != "" {
		v.dnsName(p, "domain", n.Domain)
	}
	if n.VLANTag < 0 || n.VLANTag > 4094 {
		v.diags.Addf(p.Key("vlan_tag"), "%d is outside 1-4094 (0 for none)", n.VLANTag)
	}
	if !bridgeRE().MatchString(n.Bridge) {
		v.diags.Addf(p.Key("bridge"), "%q is not a Linux interface name", n.Bridge)
	}
	if !isServiceName(n.ReverseProxy) {
		v.diags.Addf(p.Key("reverse_proxy"), "%q is not a service name", n.ReverseProxy)
	}
	for _, user := range slices.Sorted(maps.Keys(n.SSHKeys)) {
		up := p.Key("ssh_keys").Key(user)
		if !unixUserRE().MatchString(user) {
			v.diags.Addf(up, "%q is not a valid user name", user)
		}
		for i, key := range n.SSHKeys[user] {
			if !sshKeyRE().MatchString(key) {
				v.diags.Addf(up.Index(i), "is not an SSH public key on one line (\"ssh-ed25519 AAAA... comment\")")
			}
		}
	}
	if l := n.Outposts.LDAP; l != nil && !baseDNRE().MatchString(l.BaseDN) {
		v.diags.Addf(p.Key("outposts").Key("ldap").Key("base_dn"), "%q is not a base DN like dc=lab,dc=example", l.BaseDN)
	}
	if r := n.Outposts.RADIUS; r != nil {
		for i, c := range r.ClientNetworks {
			if _, err := netip.ParsePrefix(c); err != nil {
				v.diags.Addf(p.Key("outposts").Key("radius").Key("client_networks").Index(i), "%q is not a network in CIDR notation", c)
			}
		}
	}
}

// outpostRunners checks the services named to run the outposts.
func (v *validator) outpostRunners() {
	v.runners = v.m.Network.Outposts.runners()
	for _, kind := range slices.Sorted(maps.Keys(v.runners)) {
		name := v.runners[kind]
		p := Path{"network", "outposts", kind, "service"}
		_, ok := v.byName[name]
		switch {
		case !ok && v.all[name] != nil:
			v.diags.Addf(p, "%q is disabled", name)
		case !ok:
			v.diags.Addf(p, "no enabled service is called %q%s", name, didYouMean(name, v.names))
		case name == DefaultAuthProvider():
			v.diags.Addf(p, "%q is the auth provider: its system is built before tf:auth-core makes the outpost's token; name another service (it may run the outpost beside an application)", name)
		case v.byName[DefaultAuthProvider()] == nil:
			v.diags.Addf(p, "the outpost needs the auth provider %q, which is not an enabled service", DefaultAuthProvider())
		}
	}
}

// runners returns the service named to run each outpost that names one,
// by kind ("ldap", "radius").
func (o Outposts) runners() map[string]string {
	out := map[string]string{}
	if o.LDAP != nil && o.LDAP.Service != "" {
		out["ldap"] = o.LDAP.Service
	}
	if o.RADIUS != nil && o.RADIUS.Service != "" {
		out["radius"] = o.RADIUS.Service
	}
	return out
}

// ipInNetwork checks an IPv4 address and that it lies in network_cidr.
func (v *validator) ipInNetwork(parent Path, field, ip string, required bool) (netip.Addr, bool) {
	if ip == "" {
		if required {
			v.diags.Addf(parent.Key(field), "is required")
		}
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		v.diags.Addf(parent.Key(field), "%q is not an IPv4 address", ip)
		return netip.Addr{}, false
	}
	if v.cidr.IsValid() {
		if !v.cidr.Contains(a) {
			v.diags.Addf(parent.Key(field), "%s is outside network.network_cidr %s", ip, v.cidr)
			return a, false
		}
		if a == v.cidr.Addr() || (v.cidr.Bits() < 31 && a == broadcast(v.cidr)) {
			v.diags.Addf(parent.Key(field), "%s is the network's own network or broadcast address", ip)
			return a, false
		}
	}
	return a, true
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func (v *validator) dnsName(parent Path, field, name string) bool {
	if !isDNSName(name) {
		v.diags.Addf(parent.Key(field), "%q is not a valid DNS name", truncate(name, 80))
		return false
	}
	return true
}

// isDNSName reports whether s is a host name: dot-separated labels of
// letters, digits and inner hyphens, at most 253 characters.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for s != "" {
		label, rest, _ := strings.Cut(s, ".")
		if !isDNSLabel(label) || (rest == "" && len(label) < len(s)) {
			return false // a bad label, or a trailing dot
		}
		s = rest
	}
	return true
}

// collect indexes the services and checks their names.
func (v *validator) collect() {
	for _, sec := range []struct {
		name string
		m    map[string]*Service
	}{{"core_services", v.m.CoreServices}, {"services", v.m.Services}} {
		for _, name := range slices.Sorted(maps.Keys(sec.m)) {
			s := sec.m[name]
			p := Path{sec.name, name}
			if s == nil {
				continue // null: absent, like every null (or a type error already reported)
			}
			if !isServiceName(name) {
				v.diags.Addf(p, "service name %q is not a DNS label (lower-case letters, digits and inner hyphens, at most 63)", truncate(name, 80))
			}
			if prev, dup := v.all[name]; dup {
				v.diags.Addf(p, "service %q is also defined in %s", name, prev.Path()[0])
				continue
			}
			v.all[name] = s
			v.names = append(v.names, name)
			if s.Enable {
				v.byName[name] = s
			}
		}
	}
	slices.Sort(v.names)
	// Index addresses before the per-service checks so that references
	// (db host, forward_auth upstream) resolve whatever the order.
	for _, s := range v.m.Enabled() {
		if v.byName[s.Name] != s {
			continue
		}
		if _, taken := v.byIP[s.IP]; !taken && s.IP != "" {
			v.byIP[s.IP] = s
		}
		h := strings.ToLower(s.Hostname)
		if _, taken := v.byHost[h]; !taken && h != "" {
			v.byHost[h] = s
		}
		if s.Interface.DB != nil && s.Interface.DB.Mode == "standalone" {
			v.dbHosts = append(v.dbHosts, s)
		}
	}
}

func (v *validator) globals() {
	m := v.m
	v.intRange(nil, "health_check_timeout", m.HealthCheckTimeout, 1, 86400)
	if m.Flake != "" {
		if err := checkFlakeRef(m.Flake); err != nil {
			v.diags.Addf(Path(nil).Key("flake"), "%q: %v", truncate(m.Flake, 80), err)
		}
	}
	v.intRange(nil, "retry_attempts", m.RetryAttempts, 0, 100)
	v.intRange(nil, "retry_delay", m.RetryDelay, 0, 3600)
}

func (v *validator) intRange(parent Path, field string, n, lo, hi int) {
	if n < lo || n > hi {
		v.diags.Addf(parent.Key(field), "%d is outside %d-%d", n, lo, hi)
	}
}

func (v *validator) service(s *Service) {
	if v.byName[s.Name] != s {
		return // a duplicate name, reported by collect
	}
	p := s.Path()
	s.deps = v.deps[:0] // merged and copied out by dependencies
	v.ipInNetwork(p, "ip", s.IP, true)
	if s.IP != "" && s.IP == v.m.Network.Gateway {
		v.diags.Addf(p.Key("ip"), "%s is the gateway's address", s.IP)
	}
	if s.Hostname == "" {
		v.diags.Addf(p.Key("hostname"), "is required")
	} else {
		v.dnsName(p, "hostname", s.Hostname)
	}
	if s.VMID != 0 {
		v.intRange(p, "vmid", s.VMID, 100, 999999999)
	}
	if s.Node != "" && !pveNode.MatchString(s.Node) {
		v.diags.Addf(p.Key("node"), "%q is not a Proxmox node name (letters, digits and inner dashes)", truncate(s.Node, 80))
	}
	if s.Closure != "" {
		if ref, attr, ok := strings.Cut(s.Closure, "#"); ok {
			if err := checkFlakeRef(ref); err != nil {
				v.diags.Addf(p.Key("closure"), "%q: %v", truncate(s.Closure, 80), err)
			} else if _, err := AttrPath(attr); err != nil {
				v.diags.Addf(p.Key("closure"), "%q: %v", truncate(s.Closure, 80), err)
			}
		} else if !isCleanPath(s.Closure) {
			v.diags.Addf(p.Key("closure"), "%q is not a usable file path", truncate(s.Closure, 80))
		}
	}
	if len(s.Exec) > 0 {
		switch {
		case s.Closure != "":
			v.diags.Addf(p.Key("exec"), "a service is deployed by its closure or by exec, not both")
		case s.Exec[0] == "":
			v.diags.Addf(p.Key("exec").Index(0), "is the program to run and must not be empty")
		}
	}
	if strings.IndexFunc(s.Version, unicode.IsControl) >= 0 {
		v.diags.Addf(p.Key("version"), "must not contain control characters")
	}
	v.intRange(p, "resources.cores", s.Resources.Cores, 1, 512)
	v.intRange(p, "resources.memory", s.Resources.Memory, 16, 4<<20)
	v.intRange(p, "resources.disk_gb", s.Resources.DiskGB, 1, 1<<16)
	seen := map[int]bool{}
	for i, port := range s.Ports {
		if port < 1 || port > 65535 {
			v.diags.Addf(p.Key("ports").Index(i), "port %d is outside 1-65535", port)
		} else if seen[port] {
			v.diags.Addf(p.Key("ports").Index(i), "port %d is listed twice", port)
		}
		seen[port] = true
	}
	for i, t := range s.Tags {
		if !isTag(t) {
			v.diags.Addf(p.Key("tags").Index(i), "tag %q must be lower-case letters, digits, and _ . + - inside", truncate(t, 80))
		}
	}
	ip := p.Key("interface")
	if tf := s.Interface.Terraform; tf != nil {
		v.terraform(ip.Key("terraform"), tf)
	}
	if a := s.Interface.Auth; a != nil {
		v.auth(ip.Key("auth"), s, a, -1)
	}
	dbIndex := int32(0) // in Databases()
	if db := s.Interface.DB; db != nil {
		v.db(ip.Key("db"), s, db, "", dbIndex)
		dbIndex++
	}
	for _, key := range slices.Sorted(maps.Keys(s.Interface.DBs)) {
		db := s.Interface.DBs[key]
		if db == nil {
			continue // null: absent
		}
		v.db(ip.Key("dbs").Key(key), s, db, key, dbIndex)
		dbIndex++
	}
	if px := s.Interface.Proxy; px != nil {
		v.proxy(ip.Key("proxy"), s, px)
	}
	if h := s.Interface.Health; h != nil {
		v.health(ip.Key("health"), h)
	}
}

func (v *validator) terraform(p Path, tf *Terraform) {
	paths := map[string]bool{}
	for _, field := range []struct {
		name string
		list []string
	}{{"modules", tf.Modules}, {"config_modules", tf.ConfigModules}} {
		for i, mod := range field.list {
			if !isCleanPath(mod) {
				v.diags.Addf(p.Key(field.name).Index(i), "%q is not a usable module path", truncate(mod, 80))
			}
			paths[mod] = true
		}
	}
	for i, mod := range tf.ApplyOrder {
		if !paths[mod] {
			v.diags.Addf(p.Key("apply_order").Index(i), "%q is not one of the modules%s", truncate(mod, 80), didYouMean(mod, slices.Sorted(maps.Keys(paths))))
		}
	}
	for i, t := range tf.Targets {
		if !tfAddressRE().MatchString(t) {
			v.diags.Addf(p.Key("targets").Index(i), "%q is not a Terraform resource address", truncate(t, 80))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(tf.Variables)) {
		if !tfIdentRE().MatchString(k) {
			v.diags.Addf(p.Key("variables").Key(k), "%q is not a Terraform variable name", truncate(k, 80))
		}
	}
}

// isCleanPath accepts file paths without control characters.
// pveNode is PVE's pve-node format.
var pveNode = regexp.MustCompile(`^(?i:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)$`)

func isCleanPath(s string) bool {
	return s != "" && len(s) <= 4096 && strings.IndexFunc(s, unicode.IsControl) < 0
}

// auth checks the service's auth block (route -1) or one route's.
func (v *validator) auth(p Path, s *Service, a *Auth, route int32) {
	if a.Type == "none" {
		if a.OIDC != nil {
			v.diags.Addf(p.Key("oidc"), "oidc settings are given but type is %q", a.Type)
		}
		return
	}
	site, fwd := depSite{atAuthProvider, 0}, depSite{atForwardAuth, 0}
	if route >= 0 {
		site, fwd = depSite{atRouteAuthProvider, route}, depSite{atRouteForwardAuth, route}
	}
	v.provider(p, "provider", site, s, a.Provider)
	switch a.Type {
	case "oidc":
		if a.OIDC == nil {
			v.diags.Addf(p.Key("oidc"), "is required when type is \"oidc\" (at least redirect_uris)")
		} else {
			v.oidc(p.Key("oidc"), a.OIDC)
			v.oneClientID(p, s, a, route)
		}
	case "ldap", "radius":
		if (a.Type == "ldap" && v.m.Network.Outposts.LDAP == nil) || (a.Type == "radius" && v.m.Network.Outposts.RADIUS == nil) {
			v.diags.Addf(p.Key("type"), "auth type %q needs network.outposts.%s", a.Type, a.Type)
		}
		fallthrough
	default:
		if a.OIDC != nil {
			v.diags.Addf(p.Key("oidc"), "oidc settings are given but type is %q", a.Type)
		}
	}
	if a.ForwardAuthUpstream != "" {
		if host, ok := v.hostPort(p, "forward_auth_upstream", a.ForwardAuthUpstream); ok {
			if t := v.lookupHost(host); isLocal(host) {
				// The provider's own container: no edge beyond the provider's.
			} else if t == nil {
				v.diags.Addf(p.Key("forward_auth_upstream"), "no enabled service has the address %q", host)
			} else if t != s {
				v.addDep(s, t.Name, "forward_auth upstream", fwd)
			}
		}
	}
}

// provider resolves an auth provider name to an enabled core service and
// records the edge.
func (v *validator) provider(parent Path, field string, site depSite, s *Service, name string) *Service {
	t, ok := v.byName[name]
	switch {
	case !ok && v.all[name] != nil:
		v.diags.Addf(parent.Key(field), "auth provider %q is disabled", name)
	case !ok:
		v.diags.Addf(parent.Key(field), "no enabled service provides auth provider %q%s", name, didYouMean(name, v.names))
	case !t.Core:
		v.diags.Addf(parent.Key(field), "auth provider %q must be a core service: its Terraform (tf:auth-core) runs before any application", name)
	case t != s:
		v.addDep(s, name, "auth provider", site)
	}
	return t
}

// oneClientID refuses a service whose auth.oidc.client_id and the client id
// it passes its Terraform modules (variables.oidc_client_id) differ.
func (v *validator) oneClientID(p Path, s *Service, a *Auth, route int32) {
	tf := s.Interface.Terraform
	if route >= 0 || a.OIDC.ClientID == "" || tf == nil {
		return
	}
	vp := s.Path().Key("interface").Key("terraform").Key("variables").Key(ClientIDVariable)
	switch id, ok := tf.Variables[ClientIDVariable]; {
	case !ok:
	case id != a.OIDC.ClientID:
		v.diags.Addf(vp, "%v differs from %s (%q): a client has one id; drop one of them", id, p.Key("oidc").Key("client_id"), a.OIDC.ClientID)
	}
}

func (v *validator) oidc(p Path, o *OIDC) {
	if o.ClientID != "" && !clientChars.all(o.ClientID, 1, 255) {
		v.diags.Addf(p.Key("client_id"), "%q may hold only letters, digits, '.', '_' and '-'", truncate(o.ClientID, 80))
	}
	if len(o.RedirectURIs) == 0 {
		v.diags.Addf(p.Key("redirect_uris"), "needs at least one redirect URI")
	}
	for i, u := range o.RedirectURIs {
		if msg := checkRedirectURI(u); msg != "" {
			v.diags.Addf(p.Key("redirect_uris").Index(i), "%q %s", truncate(u, 80), msg)
		}
	}
	for i, sc := range o.Scopes {
		if !scopeChars.all(sc, 1, 255) {
			v.diags.Addf(p.Key("scopes").Index(i), "%q is not a scope name", truncate(sc, 80))
		}
	}
	if !claimChars.all(o.UsernameClaim, 1, 255) {
		v.diags.Addf(p.Key("username_claim"), "%q is not a claim name", truncate(o.UsernameClaim, 80))
	}
	if !claimChars.all(o.GroupsClaim, 1, 255) {
		v.diags.Addf(p.Key("groups_claim"), "%q is not a claim name", truncate(o.GroupsClaim, 80))
	}
}

// uriScheme is a URI's scheme (RFC 3986 §3.1).
var uriScheme = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.\-]*):`)

// dangerousSchemes run code, carry data or reach local files: never a
// redirect target.
var dangerousSchemes = map[string]bool{"javascript": true, "data": true, "vbscript": true, "file": true, "blob": true, "about": true, "filesystem": true}

// checkRedirectURI returns what is wrong with an OIDC redirect URI, or "":
// an absolute http(s) URL, or a native app's private-use scheme (RFC 8252).
func checkRedirectURI(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
		return "contains white space or control characters"
	}
	m := uriScheme.FindStringSubmatch(s)
	if m == nil {
		return "must be an absolute http:// or https:// URL, or a native app's own scheme (com.example.app:/callback)"
	}
	scheme := strings.ToLower(m[1])
	if dangerousSchemes[scheme] {
		return scheme + ": is not a redirect URI scheme"
	}
	if strings.Contains(s, "#") {
		return "must not have a fragment (#...)"
	}
	u, err := url.Parse(s)
	if err != nil {
		return "is not a URL"
	}
	if scheme != "https" && scheme != "http" {
		// A private-use scheme of a native app (RFC 8252 §7.1): Authentik
		// accepts it; it needs somewhere to go.
		if u.Opaque == "" && u.Path == "" && u.Host == "" {
			return "has no path after its scheme"
		}
		return ""
	}
	if u.Host == "" || !isDNSName(u.Hostname()) && !isIP(u.Hostname()) {
		return "has no valid host"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "has a port outside 1-65535"
		}
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return "must not have a fragment (#...)"
	}
	if u.User != nil {
		return "must not contain user information"
	}
	return ""
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// hostPort checks "host:port" and returns the host.
func (v *validator) hostPort(parent Path, field, s string) (string, bool) {
	host, _, problem := splitHostPort(s)
	if problem != "" {
		v.diags.Addf(parent.Key(field), "%q %s", truncate(s, 80), problem)
		return "", false
	}
	return host, true
}

// splitHostPort parses host:port, where host is localhost, an IPv4 address
// or a DNS name and port is 1-65535.
func splitHostPort(s string) (host string, port int, problem string) {
	h, ps, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(ps, ":") {
		return "", 0, "is not host:port"
	}
	if !isDNSName(h) && !isIP(h) {
		return "", 0, "has no valid host"
	}
	n, err := strconv.Atoi(ps)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != ps {
		return "", 0, "has a port outside 1-65535"
	}
	return h, n, ""
}

// lookupHost finds the enabled service with the given IP, hostname or name.
func (v *validator) lookupHost(host string) *Service {
	if s, ok := v.byIP[host]; ok {
		return s
	}
	if s, ok := v.byHost[strings.ToLower(host)]; ok {
		return s
	}
	return v.byName[host]
}

func isLocal(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// db checks one of the service's databases, index in Databases().
func (v *validator) db(p Path, s *Service, db *DB, key string, index int32) {
	if db.Name == "" {
		db.Name = key
	}
	if db.Name == "" {
		v.diags.Addf(p.Key("name"), "is required")
	} else if !isIdent(db.Name) {
		v.diags.Addf(p.Key("name"), "%q is not a database name (letters, digits, _ and -, at most 63, not starting with a digit)", truncate(db.Name, 80))
	}
	if db.Owner == "" {
		db.Owner = db.Name
	} else if !isIdent(db.Owner) {
		v.diags.Addf(p.Key("owner"), "%q is not a role name (letters, digits, _ and -, at most 63, not starting with a digit)", truncate(db.Owner, 80))
	}
	v.intRange(p, "port", db.Port, 1, 65535)
	for i, extra := range db.AdditionalDBs {
		if !isIdent(extra) {
			v.diags.Addf(p.Key("additionaldbs").Index(i), "%q is not a database name", truncate(extra, 80))
		}
	}
	for i, mig := range db.Migrations {
		if !isCleanPath(mig) {
			v.diags.Addf(p.Key("migrations").Index(i), "%q is not a usable file path", truncate(mig, 80))
		}
	}
	if db.Mode == "standalone" {
		if db.Host != "" && !isLocal(db.Host) && v.lookupHost(db.Host) != s {
			v.diags.Addf(p.Key("host"), "a standalone database runs on its own service; host %q names another", db.Host)
		}
		db.server = s
		return
	}
	switch {
	case db.Host != "" && isLocal(db.Host):
		db.server = s
	case db.Host != "":
		t := v.lookupHost(db.Host)
		if t == nil {
			v.diags.Addf(p.Key("host"), "no enabled service has the address %q", db.Host)
			return
		}
		db.server = t
	case len(v.dbHosts) == 1:
		db.server = v.dbHosts[0]
	case len(v.dbHosts) == 0:
		v.diags.Addf(p.Key("host"), "is required: no enabled service has db.mode = \"standalone\" to default to")
		return
	default:
		v.diags.Addf(p.Key("host"), "is required: several services have db.mode = \"standalone\" (%s)", serviceNames(v.dbHosts))
		return
	}
	if db.server != s {
		v.addDep(s, db.server.Name, "database host", depSite{atDBHost, index})
	}
}

func serviceNames(ss []*Service) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

func (v *validator) proxy(p Path, s *Service, px *Proxy) {
	for j, r := range px.Routes {
		rp := p
		if px.Named {
			rp = p.Key(r.Name)
			if !isServiceName(r.Name) {
				v.diags.Addf(rp, "route name %q is not a DNS label", truncate(r.Name, 80))
			}
		}
		if r.Domain == "" {
			v.diags.Addf(rp.Key("domain"), "is required")
		} else {
			v.dnsName(rp, "domain", r.Domain)
		}
		if !isRoutePath(r.Path) {
			v.diags.Addf(rp.Key("path"), "%q must start with / and hold only letters, digits and . _ ~ %% / -", truncate(r.Path, 80))
		}
		if r.Upstream == "" {
			v.diags.Addf(rp.Key("upstream"), "is required")
		} else {
			v.hostPort(rp, "upstream", r.Upstream)
		}
		for _, h := range slices.Sorted(maps.Keys(r.Headers)) {
			if !headerChars.all(h, 1, 128) {
				v.diags.Addf(rp.Key("headers").Key(h), "%q is not a header name", truncate(h, 80))
			}
			if val := r.Headers[h]; strings.IndexFunc(val, unicode.IsControl) >= 0 {
				v.diags.Addf(rp.Key("headers").Key(h), "value must not contain control characters or newlines")
			} else if strings.Contains(val, "`") && (strings.Contains(val, `\"`) || strings.HasSuffix(val, `\`)) {
				// No Caddyfile quoting can hold all three.
				v.diags.Addf(rp.Key("headers").Key(h), "a value with a backtick cannot also have a backslash before a quote or at its end")
			}
		}
		if r.Auth != nil {
			v.auth(rp.Key("auth"), s, r.Auth, int32(j))
		}
		if r.Authz {
			switch {
			case r.Auth != nil && r.Auth.Type != "none":
			case s.Interface.Auth != nil && s.Interface.Auth.Type != "none":
			default:
				// authz with no auth block: the default provider.
				v.provider(rp, "authz", depSite{atRouteAuthz, int32(j)}, s, DefaultAuthProvider())
			}
		}
	}
	if s.Name == v.m.Network.ReverseProxy {
		return
	}
	rpSvc, ok := v.byName[v.m.Network.ReverseProxy]
	switch {
	case !ok:
		v.diags.Addf(p, "needs the reverse proxy %q, which is not an enabled service (set network.reverse_proxy)", v.m.Network.ReverseProxy)
	default:
		v.addDep(s, rpSvc.Name, "reverse proxy", depSite{atReverseProxy, 0})
	}
}

func (v *validator) health(p Path, h *Health) {
	if h.Startup == "" && h.Liveness == "" && h.Readiness == "" {
		v.diags.Addf(p, "needs at least one of startup, liveness, readiness")
	}
	for _, c := range []struct{ name, cmd string }{{"startup", h.Startup}, {"liveness", h.Liveness}, {"readiness", h.Readiness}} {
		if strings.ContainsRune(c.cmd, 0) {
			v.diags.Addf(p.Key(c.name), "must not contain NUL bytes")
		}
	}
	v.intRange(p, "interval", h.Interval, 1, 86400)
	v.intRange(p, "timeout", h.Timeout, 1, 86400)
	v.intRange(p, "retries", h.Retries, 0, 100)
	v.intRange(p, "start_period", h.StartPeriod, 0, 86400)
}

// duplicates reports IPs, hostnames, vmids, route domain+path pairs and
// databases that two enabled services share.
func (v *validator) duplicates(enabled []*Service) {
	// The indexes hold only where a value was first seen, in a few bytes;
	// paths and messages are built only for the duplicates found. IPs and
	// host names were indexed, first seen first, by collect.
	n := len(enabled)
	var (
		vmids  = make(map[int]site, n)
		routes = make(map[[2]string]site, n)
		tlsOf  = make(map[string]site, n) // each domain's first route
		dbs    = make(map[[2]string]site, n)
	)
	dup := func(at, prev site, what string) {
		v.diags.Addf(at.path(), "%s is already used by %s", what, prev.path())
	}
	for _, s := range enabled {
		if v.byName[s.Name] != s {
			continue
		}
		if first := v.byIP[s.IP]; s.IP != "" && first != s {
			dup(site{svc: s, field: siteIP}, site{svc: first, field: siteIP}, "IP "+s.IP)
		}
		if h := strings.ToLower(s.Hostname); h != "" {
			if first := v.byHost[h]; first != s {
				dup(site{svc: s, field: siteHostname}, site{svc: first, field: siteHostname}, "hostname "+h)
			}
		}
		if s.VMID != 0 {
			if prev, ok := firstSeen(vmids, s.VMID, site{svc: s, field: siteVMID}); !ok {
				dup(site{svc: s, field: siteVMID}, prev, "vmid "+strconv.Itoa(s.VMID))
			}
		}
		if px := s.Interface.Proxy; px != nil {
			for j, r := range px.Routes {
				if r.Domain == "" {
					continue
				}
				at := site{svc: s, field: siteRouteDomain, sub: int32(j)}
				d := strings.ToLower(r.Domain)
				if prev, ok := firstSeen(routes, [2]string{d, r.Path}, at); !ok {
					dup(at, prev, "route "+d+r.Path)
				}
				// One site per domain: its routes must agree on TLS.
				if prev, ok := firstSeen(tlsOf, d, at); !ok {
					if other := prev.svc.Interface.Proxy.Routes[prev.sub]; other.TLS != r.TLS {
						v.diags.Addf(site{svc: s, field: siteRouteTLS, sub: int32(j)}.path(),
							"is %t, but %s serves the same domain with tls = %t", r.TLS, prev.path(), other.TLS)
					}
				}
			}
		}
		if s.Interface.DB == nil && len(s.Interface.DBs) == 0 {
			continue
		}
		for j, d := range s.Databases() {
			if d.DB.server == nil || d.DB.Mode == "standalone" {
				continue
			}
			at := site{svc: s, field: siteDBName, sub: int32(j)}
			for k := -1; k < len(d.DB.AdditionalDBs); k++ {
				name := d.DB.Name
				if k >= 0 {
					name = d.DB.AdditionalDBs[k]
				}
				if name == "" {
					continue
				}
				if prev, ok := firstSeen(dbs, [2]string{name, d.DB.server.Name}, at); !ok {
					dup(at, prev, "database "+strconv.Quote(name)+" on "+d.DB.server.Name)
				}
			}
		}
	}
}

// firstSeen records that key was seen at at, unless it was seen before:
// then it returns where, and false.
func firstSeen[K comparable](m map[K]site, key K, at site) (site, bool) {
	if prev, seen := m[key]; seen {
		return prev, false
	}
	m[key] = at
	return at, true
}

// site is where a value that must be unique was first seen: a service,
// which of its fields and, for a route or a database, which one.
type site struct {
	svc   *Service
	sub   int32
	field uint8
}

// The fields a site can point at.
const (
	siteIP uint8 = iota
	siteHostname
	siteVMID
	siteRouteDomain
	siteRouteTLS
	siteDBName
)

func (st site) path() Path {
	s := st.svc
	p := s.Path()
	switch st.field {
	case siteIP:
		return p.Key("ip")
	case siteHostname:
		return p.Key("hostname")
	case siteVMID:
		return p.Key("vmid")
	case siteRouteDomain, siteRouteTLS:
		px := s.Interface.Proxy
		p = p.Key("interface").Key("proxy")
		if px.Named {
			p = p.Key(px.Routes[st.sub].Name)
		}
		if st.field == siteRouteTLS {
			return p.Key("tls")
		}
		return p.Key("domain")
	case siteDBName:
		return s.Databases()[st.sub].Path().Key("name")
	}
	panic("manifest: unknown site field")
}

// NamedDB is a database of a service with where it is declared.
type NamedDB struct {
	// Key is "db" for interface.db, else the entry's key in interface.dbs.
	Key string
	DB  *DB
	svc *Service
}

// Path is where the database is declared, e.g.
// services.media.interface.dbs.sonarr.
func (nd NamedDB) Path() Path {
	p := nd.svc.Path().Key("interface")
	if nd.DB == nd.svc.Interface.DB && nd.Key == "db" {
		return p.Key("db")
	}
	return p.Key("dbs").Key(nd.Key)
}

// Databases returns the service's db and dbs entries, db first, then dbs by
// key.
func (s *Service) Databases() []NamedDB {
	out := make([]NamedDB, 0, 1+len(s.Interface.DBs))
	if s.Interface.DB != nil {
		out = append(out, NamedDB{"db", s.Interface.DB, s})
	}
	for _, k := range slices.Sorted(maps.Keys(s.Interface.DBs)) {
		if db := s.Interface.DBs[k]; db != nil {
			out = append(out, NamedDB{k, db, s})
		}
	}
	return out
}

// Server returns the service that runs the database, once validated.
func (db *DB) Server() *Service { return db.server }

// dependencies checks depends_on, merges it with the implicit edges found
// so far, and checks that core services need only core services.
func (v *validator) dependencies(s *Service) {
	if v.byName[s.Name] != s {
		return
	}
	p := s.Path()
	// A service that runs an outpost needs its token: it comes after
	// tf:auth-core, like a service that uses the auth provider.
	for _, o := range [...]struct {
		kind string
		site uint8
	}{{"ldap", atLDAPOutpost}, {"radius", atRADIUSOutpost}} {
		if v.runners[o.kind] == s.Name && s.Name != DefaultAuthProvider() {
			v.addDep(s, DefaultAuthProvider(), "auth provider", depSite{o.site, 0})
		}
	}
	for i, d := range s.DependsOn {
		switch t, ok := v.byName[d]; {
		case slices.Contains(s.DependsOn[:i], d):
			v.diags.Addf(p.Key("depends_on").Index(i), "%q is listed twice", d)
		case d == s.Name:
			v.diags.Addf(p.Key("depends_on").Index(i), "a service cannot depend on itself")
		case !ok && v.all[d] != nil:
			v.diags.Addf(p.Key("depends_on").Index(i), "%q is disabled; enable it or remove the dependency", d)
		case !ok:
			v.diags.Addf(p.Key("depends_on").Index(i), "unknown service %q%s", d, didYouMean(d, v.names))
		default:
			s.deps = append(s.deps, Dependency{Service: t.Name, from: s, at: depSite{atDependsOn, int32(i)}, mask: reasonBit("depends_on")})
		}
	}
	// One Dependency per service, its reasons in the order found but with
	// the explicit depends_on first (and its path), since that is what the
	// user wrote. The explicit ones were appended last.
	out := s.deps[:0]
	for _, d := range s.deps {
		j := slices.IndexFunc(out, func(o Dependency) bool { return o.Service == d.Service })
		switch {
		case j < 0:
			out = append(out, d)
		case d.mask == reasonBit("depends_on") && out[j].mask&d.mask == 0:
			d.mask |= out[j].mask
			out[j] = d
		default:
			out[j].mask |= d.mask
		}
	}
	s.deps = sortedByService(out)
	v.deps = out[:0] // the scratch, as grown
	if !s.Core {
		return
	}
	for _, d := range s.deps {
		if t := v.byName[d.Service]; t != nil && !t.Core {
			v.diags.Addf(d.Location(), "core service %q depends on %q (%s), which is not a core service", s.Name, d.Service, strings.Join(d.Reasons(), ", "))
		}
	}
}

// sortedByService returns a copy of deps, whose names are unique, sorted by
// name. A service has a handful: they are ordered by index and each copied
// once, rather than the structs swapped about.
func sortedByService(deps []Dependency) []Dependency {
	out := make([]Dependency, len(deps))
	if len(deps) > 32 {
		copy(out, deps)
		slices.SortFunc(out, func(a, b Dependency) int { return strings.Compare(a.Service, b.Service) })
		return out
	}
	var order [32]uint8
	for i := range deps {
		j := i
		for ; j > 0 && deps[order[j-1]].Service > deps[i].Service; j-- {
			order[j] = order[j-1]
		}
		order[j] = uint8(i)
	}
	for k := range deps {
		out[k] = deps[order[k]]
	}
	return out
}

func (v *validator) addDep(s *Service, on, reason string, at depSite) {
	s.deps = append(s.deps, Dependency{Service: on, from: s, at: at, mask: reasonBit(reason)})
}

// reasonBit is the bit of a reason in Dependency.mask; 0 for no reason.
func reasonBit(reason string) uint8 {
	switch reason {
	case "depends_on":
		return 1
	case "auth provider":
		return 2
	case "database host":
		return 4
	case "forward_auth upstream":
		return 8
	case "reverse proxy":
		return 16
	}
	panic("manifest: unknown dependency reason " + reason)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// phases checks deployment_phases against the services; the graph package
// checks its order against the dependencies.
func (v *validator) phases() {
	dp := v.m.DeploymentPhases
	if dp == nil {
		return
	}
	p := Path{"deployment_phases"}
	listed := map[string]map[string]bool{}
	for _, ph := range []struct {
		name string
		list []string
		ok   func(*Service) string
	}{
		{"tf_infra", dp.TFInfra, func(*Service) string { return "" }},
		{"nix_core", dp.NixCore, func(s *Service) string {
			if !s.Core {
				return "is not a core service"
			}
			return ""
		}},
		{"tf_auth_core", dp.TFAuthCore, func(s *Service) string {
			if !v.isAuthProvider(s.Name) {
				return "is not the auth provider of any enabled service"
			}
			return ""
		}},
		{"services", dp.Services, func(s *Service) string {
			if s.Core {
				return "is a core service; list it under nix_core"
			}
			return ""
		}},
	} {
		listed[ph.name] = map[string]bool{}
		for i, name := range ph.list {
			ip := p.Key(ph.name).Index(i)
			s, enabled := v.byName[name]
			switch {
			case listed[ph.name][name]:
				v.diags.Addf(ip, "%q is listed twice", name)
			case v.all[name] == nil:
				v.diags.Addf(ip, "unknown service %q%s", name, didYouMean(name, v.names))
			case !enabled:
				// A disabled service is left out of everything.
			default:
				if msg := ph.ok(s); msg != "" {
					v.diags.Addf(ip, "%q %s", name, msg)
				}
			}
			listed[ph.name][name] = true
		}
	}
	for _, s := range v.m.Enabled() {
		if v.byName[s.Name] != s {
			continue
		}
		switch {
		case s.Core && !listed["nix_core"][s.Name]:
			v.diags.Addf(p.Key("nix_core"), "core service %q is enabled but not listed", s.Name)
		case !s.Core && !listed["services"][s.Name]:
			v.diags.Addf(p.Key("services"), "service %q is enabled but not listed", s.Name)
		}
	}
}

// isAuthProvider reports whether any enabled service uses name as its auth
// provider.
func (v *validator) isAuthProvider(name string) bool {
	for _, s := range v.m.Enabled() {
		for _, d := range s.deps {
			if d.Service == name && d.Has("auth provider") {
				return true
			}
		}
	}
	return false
}

// DefaultAuthProvider is the auth provider a route with authz and no auth
// block uses, and the one that runs Authentik outposts: auth.provider's
// default.
func DefaultAuthProvider() string { return withDefaults[Auth]().Provider }
