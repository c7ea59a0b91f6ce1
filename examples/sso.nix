# Single sign-on with Authentik in every form nixmox renders:
# - an app with OIDC *and* forward_auth on the same service (grafana);
# - a native (mobile) app whose redirect URI uses a private-use scheme (RFC 8252);
# - several forward_auth routes on one service (media), all on the embedded outpost;
# - LDAP and RADIUS outposts, run by a service of their own (directory), and an
#   app that binds to LDAP (wiki) and gets the bind account's password as a secret.
{
  network = {
    domain = "sso.lan";
    dns_server = "10.50.0.2";
    gateway = "10.50.0.1";
    network_cidr = "10.50.0.0/24";
    outposts = {
      ldap = { base_dn = "dc=sso,dc=lan"; service = "directory"; };
      radius = { client_networks = [ "10.50.0.0/24" ]; service = "directory"; };
    };
  };
  core_services = {
    dns = { ip = "10.50.0.2"; hostname = "dns.sso.lan"; };
    caddy = { ip = "10.50.0.3"; hostname = "caddy.sso.lan"; };
    postgresql = {
      ip = "10.50.0.4";
      hostname = "postgresql.sso.lan";
      interface.db = { name = "postgres"; mode = "standalone"; };
    };
    authentik = {
      ip = "10.50.0.5";
      hostname = "authentik.sso.lan";
      depends_on = [ "postgresql" ];
      interface = {
        db = { name = "authentik"; };
        proxy = { domain = "auth.sso.lan"; upstream = "localhost:9000"; };
      };
    };
  };
  services = {
    grafana = {
      interface.health.liveness = "curl -fsS http://localhost:3000/api/health";
      ip = "10.50.0.10";
      hostname = "grafana.sso.lan";
      interface = {
        auth = {
          type = "oidc";
          oidc = {
            redirect_uris = [ "https://grafana.sso.lan/login/generic_oauth" ];
            scopes = [ "openid" "email" "profile" "offline_access" ];
          };
        };
        proxy = { domain = "grafana.sso.lan"; upstream = "localhost:3000"; authz = true; };
      };
    };
    vault = {
      ip = "10.50.0.11";
      hostname = "vault.sso.lan";
      interface.health.liveness = "curl -fsS http://localhost:8080/alive";
      interface = {
        auth = {
          type = "oidc";
          oidc = {
            client_id = "vault-mobile";
            client_type = "public";
            redirect_uris = [ "lan.sso.vault:/oauth2redirect" "nativeapp:///callback" "https://vault.sso.lan/oidc/callback" ];
          };
        };
        proxy = { domain = "vault.sso.lan"; upstream = "localhost:8080"; };
      };
    };
    media = {
      ip = "10.50.0.12";
      hostname = "media.sso.lan";
      interface.health.liveness = "curl -fsS http://localhost:8096/health";
      interface.proxy = {
        sonarr = { domain = "sonarr.sso.lan"; upstream = "localhost:8989"; authz = true; };
        radarr = { domain = "radarr.sso.lan"; upstream = "localhost:7878"; authz = true; };
        jellyfin = { domain = "jellyfin.sso.lan"; upstream = "localhost:8096"; authz = true; };
      };
    };
    directory = {
      ip = "10.50.0.13";
      hostname = "directory.sso.lan";
      ports = [ 389 636 1812 ];
      interface.health.startup = "systemctl is-active --quiet authentik-ldap authentik-radius";
    };
    wiki = {
      ip = "10.50.0.14";
      hostname = "wiki.sso.lan";
      interface.health.liveness = "curl -fsS http://localhost:3000/healthz";
      interface = {
        auth = { type = "ldap"; };
        proxy = { domain = "wiki.sso.lan"; upstream = "localhost:3000"; };
      };
    };
  };
}
