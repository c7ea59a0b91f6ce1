// Package manifest is the nixmox service manifest: its model, the loaders that
// read it from Nix, JSON or YAML, its defaults and its validation.
//
// The model is described once, in the struct tags below: `json` names the field,
// `doc` explains it, `default` gives the value an absent field takes and `enum`
// lists the values a string may take. The decoder, the JSON Schema export and the
// manifest reference (docs/manifest.md) are all derived from these tags, so they
// cannot disagree.
package manifest

// Manifest is a whole homelab: its network, its core services, its application
// services and the rollout options.
type Manifest struct {
	Network      Network             `json:"network" doc:"The network every container lives on."`
	CoreServices map[string]*Service `json:"core_services" doc:"Services everything else stands on (DNS, PostgreSQL, the reverse proxy, the identity provider). They are deployed first, in dependency order, and a failure among them halts the rollout."`
	Services     map[string]*Service `json:"services" doc:"Application services. Each is deployed once everything it needs is healthy; independent services are deployed in parallel."`

	Flake string `json:"flake" doc:"A flake whose nixosConfigurations.<service> is the system of every service that has neither closure nor exec, e.g. \".\" (the manifest's directory), \"./hosts\" or \"github:me/homelab\". A reference starting with . or / is a path relative to the manifest; anything else is passed to Nix as written. nixmox adds what it knows of the service (rendered files, Terraform outputs, secret names) with extendModules, as the module argument nixmox. See docs/nixos.md."`

	DeploymentPhases *DeploymentPhases `json:"deployment_phases" doc:"Optional statement of which service belongs to which phase. nixmox derives the phases from the dependency graph; when this is given it must agree with the graph."`

	HealthCheckTimeout     int  `json:"health_check_timeout" default:"600" doc:"Seconds a service may take, after its configuration is switched, to report healthy before its deploy fails."`
	RetryAttempts          int  `json:"retry_attempts" default:"3" doc:"How many times a step that failed for a transient reason (connection refused or reset, timeout) is retried."`
	RetryDelay             int  `json:"retry_delay" default:"10" doc:"Seconds before the first retry; later retries back off exponentially, with jitter."`
	EnableRollback         bool `json:"enable_rollback" default:"true" doc:"Roll a service back to its last healthy generation when its deploy fails."`
	EnableHealthMonitoring bool `json:"enable_health_monitoring" default:"true" doc:"Keep running each service's liveness check after the deploy and report transitions."`
	EnableDependencyGraph  bool `json:"enable_dependency_graphing" default:"true" doc:"Accepted for compatibility with the seed format; nixmox always builds the dependency graph."`
	EnableDeploymentLog    bool `json:"enable_deployment_logging" default:"true" doc:"Keep the audit log of every rollout, step and attempt in the state store."`

	// File is the path the manifest was read from ("" when it came from bytes).
	File string `json:"-"`
	// JSON is the manifest as the JSON it was decoded from. Its strings
	// are slices of it.
	JSON string `json:"-"`

	enabled []*Service
	byName  map[string]*Service
}

// Network describes the one network all containers share.
type Network struct {
	Domain       string              `json:"domain" doc:"DNS domain of the homelab. Defaults to the DNS service's hostname without its first label (dns.homelab.lan gives homelab.lan)."`
	DNSServer    string              `json:"dns_server" doc:"IPv4 address of the DNS server every container uses. The enabled service with this IP is the DNS service."`
	Gateway      string              `json:"gateway" doc:"IPv4 address of the default gateway; inside network_cidr."`
	NetworkCIDR  string              `json:"network_cidr" doc:"The containers' network, e.g. 10.40.0.0/24. Every service IP must lie inside it."`
	VLANTag      int                 `json:"vlan_tag" doc:"802.1Q VLAN tag of the containers' interface (1-4094); 0 or absent for none."`
	Bridge       string              `json:"bridge" default:"vmbr0" doc:"Linux bridge on the Proxmox host that the containers' interface joins."`
	ReverseProxy string              `json:"reverse_proxy" default:"caddy" doc:"Name of the core service that acts as the reverse proxy. Every other service with interface.proxy depends on it."`
	SSHKeys      map[string][]string `json:"ssh_keys" doc:"Authorized SSH public keys per user, installed on every container."`
	Outposts     Outposts            `json:"outposts" doc:"Authentik outposts to deploy besides the embedded one."`
}

// Outposts lists the optional Authentik outposts.
type Outposts struct {
	LDAP   *LDAPOutpost   `json:"ldap" doc:"An LDAP outpost: present means created in Authentik (provider, application, outpost, its token) by tf:auth-core, and run by its service when one is named."`
	RADIUS *RADIUSOutpost `json:"radius" doc:"A RADIUS outpost: present means created in Authentik (provider, application, outpost, its token) by tf:auth-core, and run by its service when one is named."`
}

// LDAPOutpost configures Authentik's LDAP outpost.
type LDAPOutpost struct {
	BaseDN  string `json:"base_dn" doc:"Base DN the LDAP outpost serves, e.g. dc=lab,dc=example."`
	Service string `json:"service" doc:"The service that runs the outpost: its agent receives the outpost's API token as the secret authentik-ldap-outpost-token, and it is deployed after tf:auth-core. Not the auth provider itself (its system is built before tf:auth-core). Without it, nixmox creates the outpost and runs nothing: its token is the sensitive output ldap_outpost_token of tf:auth-core."`
}

// RADIUSOutpost configures Authentik's RADIUS outpost.
type RADIUSOutpost struct {
	ClientNetworks []string `json:"client_networks" doc:"CIDRs allowed to talk RADIUS to the outpost."`
	Service        string   `json:"service" doc:"The service that runs the outpost (secret authentik-radius-outpost-token); as for ldap.service."`
}

// Service is one container and what runs on it.
type Service struct {
	Enable    bool      `json:"enable" default:"true" doc:"A disabled service may be incomplete; it is left out of validation, the graph, the plan and every generated file."`
	IP        string    `json:"ip" doc:"The container's IPv4 address, inside network.network_cidr and unique."`
	Hostname  string    `json:"hostname" doc:"The container's fully qualified host name; unique."`
	VMID      int       `json:"vmid" doc:"Proxmox container id (100-999999999); unique when set. Absent: Proxmox picks the next free id."`
	Version   string    `json:"version" doc:"Free-form version label of what the service runs, shown in status."`
	Resources Resources `json:"resources" doc:"CPU, memory and disk of the container."`
	OnBoot    bool      `json:"onboot" default:"true" doc:"Start the container when the Proxmox host boots."`
	Node      string    `json:"node" doc:"Proxmox: the cluster node the container is created on (default: --proxmox-node). A container migrated since is found where it is."`
	HA        bool      `json:"ha" doc:"Proxmox: manage the container with Proxmox's HA manager (registered after it is created, removed before it is deleted)."`
	Restart   string    `json:"restart" enum:"on-change,never" default:"on-change" doc:"Proxmox: what a change that a running container takes only at its next start (nameserver, searchdomain, features, ...) does: on-change restarts it (a clean shutdown, then a start); never leaves the change pending, and status and --dry-run say so."`
	Start     bool      `json:"start" default:"true" doc:"Start the container once it is created."`
	DependsOn []string  `json:"depends_on" doc:"Services that must be healthy before this one is deployed. nixmox adds the implicit ones (auth provider, database host, reverse proxy) itself."`
	Ports     []int     `json:"ports" doc:"TCP ports the service listens on (1-65535)."`
	Tags      []string  `json:"tags" doc:"Labels for selecting services (apply --on @tag) and Proxmox tags."`
	Interface Interface `json:"interface" doc:"What the service needs from the rest of the homelab and how its health is checked."`
	Closure   string    `json:"closure" doc:"The service's system: a Nix file relative to the manifest (called with nixmox = JSON when it takes that argument, see docs/local.md), or a flake output FLAKE#ATTR (e.g. \".#nixosConfigurations.dns\"; a nixosConfiguration gets nixmox's facts through extendModules, see docs/nixos.md). It evaluates to a NixOS system (bin/switch-to-configuration) or any derivation with bin/activate. nixmox-server builds it for the service's nix step and the agent switches to it. Default with a top-level flake: FLAKE#nixosConfigurations.<service>."`
	Exec      []string  `json:"exec" doc:"Instead of a closure, the escape hatch for a host without an agent: a program and its arguments (no shell) that nixmox-server runs on its own host, in the manifest's directory, for the service's nix step, with NIXMOX_SERVICE, NIXMOX_IP, NIXMOX_HOSTNAME and NIXMOX_FILES (the rendered files) set; its exit status decides the step, bounded by health_check_timeout. The verify step then runs the service's health checks from the server."`

	// Name is the service's key in core_services or services.
	Name string `json:"-"`
	// Core reports whether the service is listed under core_services.
	Core bool `json:"-"`

	deps []Dependency
	path Path
}

// Resources are the container's size.
type Resources struct {
	Cores  int `json:"cores" default:"1" doc:"CPU cores."`
	Memory int `json:"memory" default:"512" doc:"Memory in MiB."`
	DiskGB int `json:"disk_gb" default:"8" doc:"Root disk size in GiB."`
}

// Interface is what a service declares about itself.
type Interface struct {
	Terraform *Terraform     `json:"terraform" doc:"Terraform modules the service needs."`
	Auth      *Auth          `json:"auth" doc:"How users authenticate to the service."`
	DB        *DB            `json:"db" doc:"The service's database. For the database server itself, mode = \"standalone\"."`
	DBs       map[string]*DB `json:"dbs" doc:"Several databases, by name, when one service needs more than one."`
	Proxy     *Proxy         `json:"proxy" doc:"How the reverse proxy reaches the service: one route, or a set of named routes each with its own auth."`
	Health    *Health        `json:"health" doc:"Health checks, run by the agent on the container. Each is a shell command that succeeds when healthy."`
}

// Terraform names the user's Terraform modules for a service.
type Terraform struct {
	Modules       []string       `json:"modules" doc:"Paths of Terraform modules (relative to the manifest) applied before the service's NixOS configuration (tf:service-infra; for core services, tf:infra or, for the auth provider, tf:auth-core)."`
	ConfigModules []string       `json:"config_modules" doc:"Paths of Terraform modules applied after the service's NixOS configuration is active, e.g. to configure it through its own API (tf:service-config)."`
	Variables     map[string]any `json:"variables" doc:"Variables passed to the modules as they are, besides the computed ones (ip, hostname, domain, database settings)."`
	Targets       []string       `json:"targets" doc:"Resource addresses to limit the apply to (terraform -target); empty applies everything."`
	ApplyOrder    []string       `json:"apply_order" doc:"Order in which the modules are applied, by path; modules not listed follow in their listed order."`
}

// Auth says how a service (or one proxy route) authenticates users.
type Auth struct {
	Type                string `json:"type" enum:"oidc,forward_auth,ldap,radius,none" default:"none" doc:"oidc: the app speaks OIDC itself; forward_auth: the reverse proxy asks the provider before every request; ldap/radius: the app binds to the provider's outpost; none: no authentication."`
	Provider            string `json:"provider" default:"authentik" doc:"Name of the core service that provides authentication."`
	OIDC                *OIDC  `json:"oidc" doc:"OIDC client settings (type = \"oidc\")."`
	ForwardAuthUpstream string `json:"forward_auth_upstream" doc:"host:port the reverse proxy sends forward_auth requests to. Defaults to the provider's host on port 9000."`
}

// OIDC is an OIDC client registration.
type OIDC struct {
	ClientID      string   `json:"client_id" doc:"OAuth2 client id, the same in Authentik, the host facts and your modules. Default: the oidc_client_id the service passes its Terraform modules (interface.terraform.variables), else the service name (a route: service-route). Set both only if they are equal."`
	ClientType    string   `json:"client_type" enum:"confidential,public" default:"confidential" doc:"confidential clients get a client secret; public ones do not."`
	RedirectURIs  []string `json:"redirect_uris" doc:"Allowed redirect URIs, at least one: absolute http(s) URLs, or a native app's private-use scheme (RFC 8252: com.example.app:/oauth2redirect, nativeapp:///callback; reverse-DNS names recommended). Fragments, white space and schemes that run code or carry data (javascript:, data:, vbscript:, file:, blob:, about:) are refused."`
	Scopes        []string `json:"scopes" doc:"Scopes the client may request, e.g. openid email profile. openid, email, profile, entitlements, offline_access and goauthentik.io/api use Authentik's managed scope mappings; any other needs a scope mapping of that scope_name in Authentik, or tf:auth-core fails naming the scope."`
	UsernameClaim string   `json:"username_claim" default:"preferred_username" doc:"Claim the app reads the user name from."`
	GroupsClaim   string   `json:"groups_claim" default:"groups" doc:"Claim the app reads group membership from."`
}

// DB is a PostgreSQL database a service uses (or, with mode standalone, serves).
type DB struct {
	Name          string   `json:"name" doc:"Database name. In interface.dbs, defaults to the entry's key."`
	Host          string   `json:"host" doc:"Database host: the IP, hostname or name of the enabled service that runs PostgreSQL. Defaults to the service whose db.mode is standalone."`
	Owner         string   `json:"owner" doc:"Role that owns the database. Defaults to the database name."`
	Port          int      `json:"port" default:"5432" doc:"PostgreSQL port."`
	Mode          string   `json:"mode" enum:"managed,terraform,standalone" default:"managed" doc:"managed: nixmox creates the role and database on the host; terraform: the service's Terraform creates them; standalone: this service is the database server."`
	Migrations    []string `json:"migrations" doc:"SQL files (relative to the manifest) applied in order after the database is created."`
	AdditionalDBs []string `json:"additionaldbs" doc:"More databases with the same owner, e.g. a separate log database."`

	server *Service
}

// Health configures the agent's health checks of a service.
type Health struct {
	Startup     string `json:"startup" doc:"Command that succeeds once the service has started. Polled every second at first, backing off to interval, until it passes."`
	Liveness    string `json:"liveness" doc:"Command that succeeds while the service is alive; also run every interval after the deploy when health monitoring is on."`
	Readiness   string `json:"readiness" doc:"Command that succeeds when the service is ready for traffic."`
	Interval    int    `json:"interval" default:"30" doc:"Seconds between checks (1-86400)."`
	Timeout     int    `json:"timeout" default:"60" doc:"Seconds after which a check that has not passed fails (1-86400)."`
	Retries     int    `json:"retries" default:"3" doc:"Consecutive failures before the service counts as unhealthy (0-100)."`
	StartPeriod int    `json:"start_period" default:"0" doc:"Seconds after a switch during which failures do not count (0-86400)."`
}

// DeploymentPhases is the seed's explicit phase assignment.
type DeploymentPhases struct {
	TFInfra    []string `json:"tf_infra" doc:"Services whose containers and infrastructure are created in phase 1."`
	NixCore    []string `json:"nix_core" doc:"Core services, in the order they are deployed in phase 2."`
	TFAuthCore []string `json:"tf_auth_core" doc:"Authentication providers whose Terraform runs in phase 3."`
	Services   []string `json:"services" doc:"Application services deployed in phase 4."`
}
