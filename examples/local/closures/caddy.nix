# caddy: the reverse proxy, serving the Caddyfile nixmox renders (one site
# per proxied domain, certificates from Caddy's internal CA for private
# domains), plus Prometheus metrics on :9180 for monitoring.
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  caddyfile = builtins.toFile "Caddyfile" ''
    {
      admin 127.0.0.1:2019
      skip_install_trust
    }

    :9180 {
      metrics
    }

    ${builtins.readFile (lib.file "caddy/Caddyfile")}
  '';
in
lib.daemon {
  name = "caddy";
  setup = ''
    mkdir -p "$data/xdg-data" "$data/xdg-config"
  '';
  run = "env HOME=\"$data\" XDG_DATA_HOME=\"$data/xdg-data\" XDG_CONFIG_HOME=\"$data/xdg-config\" /usr/bin/caddy run --adapter caddyfile --config ${caddyfile}";
}
