# The smallest useful manifest: a DNS server and one web app behind Caddy.
{
  network = {
    dns_server = "10.0.0.2";
    gateway = "10.0.0.1";
    network_cidr = "10.0.0.0/24";
  };
  core_services = {
    dns = { ip = "10.0.0.2"; hostname = "dns.home.lan"; };
    caddy = { ip = "10.0.0.3"; hostname = "caddy.home.lan"; };
  };
  services.whoami = {
    ip = "10.0.0.10";
    hostname = "whoami.home.lan";
    interface.proxy = { domain = "whoami.home.lan"; upstream = "localhost:8000"; };
    interface.health.liveness = "curl -fsS http://localhost:8000/";
  };
}
