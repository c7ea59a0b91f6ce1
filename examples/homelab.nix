# The seed's homelab: ten services on one VLAN, as NixOS containers on Proxmox.
#
#   nixmox-cli validate -f examples/homelab.nix
#   nixmox-cli plan     -f examples/homelab.nix
#
# Core services come up first (postgresql, dns, caddy, then authentik, which
# needs postgresql); every application waits for the core services it needs
# and the applications deploy in parallel.
let
  domain = "nixmox.lan";
  subnet = "192.168.99";
  ip = octet: "${subnet}.${toString octet}";

  unitsHealthy = units: builtins.concatStringsSep " && "
    (map (u: "systemctl is-active --quiet ${u}") units);

  health = { units, liveness ? unitsHealthy units }: {
    startup = unitsHealthy units;
    inherit liveness;
    interval = 30;
    timeout = 60;
    retries = 3;
  };

  # An application behind Caddy that signs users in through Authentik (OIDC)
  # and keeps its data in PostgreSQL.
  app = { name, octet, port, sub ? name, callback, units, liveness ? null, extraPorts ? [ ] }: {
    enable = true;
    ip = ip octet;
    hostname = "${name}.${domain}";
    depends_on = [ "postgresql" "caddy" "authentik" ];
    ports = [ port ] ++ extraPorts;
    tags = [ "app" ];
    interface = {
      auth = {
        type = "oidc";
        provider = "authentik";
        oidc = {
          redirect_uris = [ "https://${sub}.${domain}${callback}" ];
          scopes = [ "openid" "email" "profile" ];
        };
      };
      db = { name = name; };
      proxy = { domain = "${sub}.${domain}"; upstream = "localhost:${toString port}"; };
      health = health ({ inherit units; } // (if liveness == null then { } else { inherit liveness; }));
    };
  };
in
{
  network = {
    inherit domain;
    dns_server = ip 13;
    gateway = ip 1;
    network_cidr = "${subnet}.0/24";
    vlan_tag = 99;
  };

  core_services = {
    postgresql = {
      ip = ip 11;
      hostname = "postgresql.${domain}";
      resources = { cores = 2; memory = 2048; disk_gb = 32; };
      interface = {
        db = { name = "postgres"; mode = "standalone"; };
        health = health { units = [ "postgresql" ]; liveness = "pg_isready -h localhost -p 5432"; };
      };
    };

    dns = {
      ip = ip 13;
      hostname = "dns.${domain}";
      interface.health = health { units = [ "unbound" ]; };
    };

    caddy = {
      ip = ip 10;
      hostname = "caddy.${domain}";
      ports = [ 80 443 ];
      interface.health = health { units = [ "caddy" ]; };
    };

    authentik = {
      ip = ip 12;
      hostname = "authentik.${domain}";
      resources = { cores = 2; memory = 3072; disk_gb = 16; };
      depends_on = [ "postgresql" ];
      ports = [ 9000 ];
      interface = {
        terraform = { modules = [ "./terraform/authentik" ]; variables = { inherit domain; }; };
        db = { name = "authentik"; };
        proxy = { domain = "auth.${domain}"; upstream = "localhost:9000"; };
        health = health {
          units = [ "authentik" ];
          liveness = "curl -f -s http://localhost:9000/-/health/live/";
        };
      };
    };
  };

  services = {
    vaultwarden = app {
      name = "vaultwarden"; octet = 14; port = 8080; sub = "vault";
      callback = "/identity/connect/oidc-signin"; units = [ "vaultwarden" ];
      liveness = "curl -f -s http://localhost:8080/alive";
    };
    nextcloud = app {
      name = "nextcloud"; octet = 15; port = 8081;
      callback = "/apps/user_oidc/code"; units = [ "phpfpm-nextcloud" "nginx" ];
    };
    guacamole = app {
      name = "guacamole"; octet = 16; port = 8280; sub = "guac";
      callback = "/guacamole/"; units = [ "tomcat" "guacamole-server" ]; extraPorts = [ 4822 ];
    };
    media = app {
      name = "media"; octet = 17; port = 8096;
      callback = "/sso/OID/redirect/authentik"; units = [ "jellyfin" ]; extraPorts = [ 8989 7878 ];
    };
    monitoring = app {
      name = "monitoring"; octet = 18; port = 3000;
      callback = "/login/generic_oauth"; units = [ "prometheus" "grafana" ]; extraPorts = [ 9090 ];
    };
    mail = app {
      name = "mail"; octet = 19; port = 8082;
      callback = "/oauth/callback"; units = [ "postfix" "dovecot2" ]; extraPorts = [ 25 587 993 ];
    };
  };

  enable_rollback = true;
  health_check_timeout = 600;
}
