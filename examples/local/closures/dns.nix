# dns: Unbound answering the records nixmox renders (dns/unbound.conf and
# the domain's zone).
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  zone = lib.dir "dns";
  conf = builtins.toFile "unbound.conf" ''
    server:
      interface: ${lib.self.ip}
      interface: 127.0.0.1
      do-ip6: no
      username: ""
      chroot: ""
      directory: "${zone}"
      pidfile: ""
      use-syslog: no
      logfile: ""
      do-daemonize: no
      access-control: 127.0.0.0/8 allow
    include: "${zone}/unbound.conf"
  '';
in
lib.daemon {
  name = "dns";
  run = "/usr/sbin/unbound -d -c ${conf}";
}
