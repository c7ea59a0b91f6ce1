# monitoring: Prometheus scraping itself and Caddy's metrics.
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  caddy = lib.host "caddy";
  conf = builtins.toFile "prometheus.yml" (builtins.toJSON {
    global.scrape_interval = "5s";
    scrape_configs = [
      { job_name = "prometheus"; static_configs = [ { targets = [ "${lib.self.ip}:9090" ]; } ]; }
      { job_name = "caddy"; static_configs = [ { targets = [ "${caddy.ip}:9180" ]; } ]; }
    ];
  });
in
lib.daemon {
  name = "monitoring";
  setup = ''
    mkdir -p "$data/tsdb"
  '';
  run = "/usr/bin/prometheus --config.file=${conf} --storage.tsdb.path=\"$data/tsdb\" --web.listen-address=${lib.self.ip}:9090";
}
