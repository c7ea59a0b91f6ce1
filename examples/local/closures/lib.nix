# What every closure of the local example shares: the `nixmox` argument
# nixmox-server builds closures with (JSON: service, files, outputs,
# secrets), and `daemon`, a system whose bin/activate (re)starts one daemon
# in the service's namespace. A closure is `{ nixmox ? "{}" }: ...`.
#
# Daemons come from the host's Debian packages (by absolute path): the
# local provider's containers share the host's filesystem. Their data
# lives in $NIXMOX_DATA_DIR; secrets are read at activation from
# $NIXMOX_SECRETS_DIR, never put in the Nix store.
{ nixmox }:
let
  cfg = builtins.fromJSON nixmox;
in
rec {
  inherit cfg;
  # file "caddy/Caddyfile": a file nixmox rendered for this rollout,
  # copied into the store.
  file = rel: builtins.path { path = /. + "${cfg.files}/${rel}"; name = baseNameOf rel; };
  dir = rel: builtins.path { path = /. + "${cfg.files}/${rel}"; name = "nixmox-" + baseNameOf rel; };

  # This service's facts (hosts/<service>.json) and another's.
  host = name: builtins.fromJSON (builtins.readFile (file "hosts/${name}.json"));
  self = host cfg.service;

  # daemon { name; setup; run; post; }: setup (shell) prepares $data; run
  # is the command that stays in the foreground (its pid is kept in
  # $data/pid); post runs once it started.
  daemon = { name, setup ? "", run, post ? "" }: derivation {
    name = "nixmox-local-${name}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    passAsFile = [ "activate" ];
    activate = ''
      #!/bin/sh
      set -eu
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      export PATH
      data="''${NIXMOX_DATA_DIR:?the local provider sets it}"
      # A generation owns the namespace's network: undo what an earlier one
      # may have done to it.
      ip link set dev eth0 up 2>/dev/null || true
      ip route del blackhole ${self.gateway}/32 2>/dev/null || true
      # Stop the previous generation's daemon.
      if [ -f "$data/pid" ]; then
        old=$(cat "$data/pid")
        kill "$old" 2>/dev/null || true
        i=0
        while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
        kill -9 "$old" 2>/dev/null || true
        rm -f "$data/pid"
      fi
      ${setup}
      setsid sh -c 'echo $$ > "$1/pid"; shift; exec "$@"' sh "$data" ${run} </dev/null >>"$data/daemon.log" 2>&1 &
      # Wait for the pid file: the health checks follow.
      i=0
      while [ ! -s "$data/pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
      ${post}
    '';
    args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp $activatePath $out/bin/activate && /bin/chmod 555 $out/bin/activate" ];
  };

  # nginx { name; root; extra; }: nginx serving the store path root on
  # port 80 of the namespace; extra is shell that prints more of the
  # server block at activation (for what must not be in the store).
  nginx = { name, root, extra ? "", post ? "" }: daemon {
    inherit name post;
    setup = ''
      mkdir -p "$data/tmp"
      umask 077
      {
        printf 'worker_processes 1;\nerror_log stderr;\npid %s/nginx.pid;\nevents {}\n' "$data"
        printf 'http {\n  access_log off;\n  include /etc/nginx/mime.types;\n'
        for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/tmp/%s;\n' "$t" "$data" "$t"; done
        printf '  server {\n    listen 80;\n    root ${root};\n'
        ${extra}
        printf '  }\n}\n'
      } > "$data/nginx.conf.tmp"
      mv "$data/nginx.conf.tmp" "$data/nginx.conf"
    '';
    run = "/usr/sbin/nginx -e stderr -p \"$data\" -c \"$data/nginx.conf\" -g 'daemon off;'";
  };
}
