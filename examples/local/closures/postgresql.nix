# postgresql: PostgreSQL 15 from Debian, with the roles and databases the
# manifest's db and dbs entries ask for (postgresql/init.sql, rendered by
# nixmox) applied at every activation (it is idempotent).
#
# Demo only: hosts on the containers' network log in without a password
# (trust). A real deployment uses the NixOS postgresql module with the
# passwords nixmox names (hosts/<service>.json: password_secret).
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  initSQL = lib.file "postgresql/init.sql";
  hba = builtins.toFile "pg_hba.conf" ''
    local all all peer
    host all all samenet trust
  '';
  pg = "/usr/lib/postgresql/15/bin";
  as = "setpriv --reuid=postgres --regid=postgres --init-groups";
in
lib.daemon {
  name = "postgresql";
  setup = ''
    mkdir -p "$data/run"
    chown postgres:postgres "$data/run"
    if [ ! -s "$data/pgdata/PG_VERSION" ]; then
      install -d -o postgres -g postgres -m 700 "$data/pgdata"
      ${as} ${pg}/initdb -D "$data/pgdata" -U postgres --auth-local=peer >"$data/initdb.log" 2>&1
    fi
  '';
  run = "${as} ${pg}/postgres -D \"$data/pgdata\" -c 'listen_addresses=*' -c \"unix_socket_directories=$data/run\" -c hba_file=${hba}";
  post = ''
    i=0
    until ${pg}/pg_isready -q -h "$data/run"; do
      i=$((i+1)); [ $i -lt 300 ] || { echo "postgresql did not start" >&2; exit 1; }
      sleep 0.1
    done
    ${as} psql -h "$data/run" -U postgres -d postgres -q -v ON_ERROR_STOP=1 -f ${initSQL}
  '';
}
