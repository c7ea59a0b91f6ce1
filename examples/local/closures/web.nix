# web: a static site whose title is an output of its Terraform module
# (terraform/site), and a /private page that answers only with the token
# the same module outputs as sensitive: the agent receives it as the
# secret "token" and it never enters the Nix store.
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  title = lib.cfg.outputs.title or "nixmox";
  escape = builtins.replaceStrings [ "&" "<" ">" "\"" ] [ "&amp;" "&lt;" "&gt;" "&quot;" ];
  root = builtins.path {
    name = "web-root";
    path = builtins.toFile "index.html" ''
      <!doctype html>
      <title>${escape title}</title>
      <h1>${escape title}</h1>
      <p>Served by nginx in the namespace of ${lib.cfg.service}.</p>
    '';
  };
  site = derivation {
    name = "web-site";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit root;
    args = [ "-c" "/bin/mkdir -p $out && /bin/cp $root $out/index.html" ];
  };
in
lib.nginx {
  name = "web";
  root = site;
  extra = ''
    token=$(cat "$NIXMOX_SECRETS_DIR/token" 2>/dev/null || true)
    case "$token" in
      ""|*[!A-Za-z0-9-]*) echo "web: the secret token is missing or not plain" >&2; exit 1 ;;
    esac
    printf '    location = /private {\n      if ($http_authorization != "Bearer %s") { return 401; }\n      return 200 "private";\n    }\n' "$token"
  '';
}
