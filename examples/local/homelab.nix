# A homelab that runs on one machine with the embedded local provider:
# every service gets a network namespace on the bridge nixmox0
# (10.231.0.0/24, the gateway 10.231.0.1 is the host) and its own
# nixmox-agent. Each closure is a Nix derivation whose bin/activate starts
# a real daemon from Debian's packages inside the service's namespace.
#
#   make demo              # installs what is missing and applies this
#   nixmox-cli status      # every service, its health and generation
#
# Authentik cannot run here, so no service uses auth; see docs/local.md.
let
  net = "10.231.0";
  domain = "home.arpa";
  health = liveness: { inherit liveness; interval = 2; timeout = 30; retries = 2; };
in
{
  network = {
    inherit domain;
    dns_server = "${net}.2";
    gateway = "${net}.1";
    network_cidr = "${net}.0/24";
  };
  health_check_timeout = 120;

  core_services = {
    dns = {
      ip = "${net}.2";
      hostname = "dns.${domain}";
      closure = "closures/dns.nix";
      interface.terraform.modules = [ "./terraform/network" ];
      interface.health = health "dig +short +time=2 @${net}.2 dns.${domain} | grep -qx ${net}.2";
    };
    postgresql = {
      ip = "${net}.3";
      hostname = "postgresql.${domain}";
      depends_on = [ "dns" ];
      closure = "closures/postgresql.nix";
      interface.db = { name = "postgres"; owner = "postgres"; mode = "standalone"; };
      interface.health = health "pg_isready -q -h ${net}.3 -p 5432";
    };
    caddy = {
      ip = "${net}.4";
      hostname = "caddy.${domain}";
      depends_on = [ "dns" ];
      closure = "closures/caddy.nix";
      interface.health = health "curl -fsS -o /dev/null http://127.0.0.1:2019/config/";
    };
  };

  services = {
    web = {
      ip = "${net}.10";
      hostname = "web.${domain}";
      closure = "closures/web.nix";
      interface = {
        # Publishes the site's title and, sensitive, the token of its
        # /private page: the closure reads one, the agent gets the other.
        terraform = { modules = [ "./terraform/site" ]; variables = { title = "Hello from nixmox"; }; };
        proxy = { domain = "www.${domain}"; upstream = "${net}.10:80"; };
        health = health "curl -fsS http://${net}.10/ | grep -q nixmox";
      };
    };
    wiki = {
      ip = "${net}.11";
      hostname = "wiki.${domain}";
      depends_on = [ "postgresql" ];
      closure = "closures/wiki.nix";
      interface = {
        db = { name = "wiki"; owner = "wiki"; };
        proxy = { domain = "wiki.${domain}"; upstream = "${net}.11:80"; };
        health = health "curl -fsS http://${net}.11/ | grep -q wiki && psql -h ${net}.3 -U wiki -d wiki -tAc 'select 1' | grep -qx 1";
      };
    };
    monitoring = {
      ip = "${net}.12";
      hostname = "monitoring.${domain}";
      depends_on = [ "web" "wiki" ];
      closure = "closures/monitoring.nix";
      interface = {
        proxy = { domain = "prometheus.${domain}"; upstream = "${net}.12:9090"; };
        health = health "curl -fsS http://${net}.12:9090/-/ready";
      };
    };
  };
}
