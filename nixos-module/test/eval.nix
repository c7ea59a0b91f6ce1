# Evaluates ../agent.nix against a minimal stand-in for the NixOS module
# system (no nixpkgs here): lib.mkOption and friends return what they are
# given, mkIf keeps its condition, and utils.escapeSystemdExecArgs is
# NixOS's definition (nixos/lib/utils.nix). It checks what the module
# itself computes — its options and the unit it makes from a configuration
# — not NixOS's type checking or merging.
{ package ? "/nix/store/00000000000000000000000000000000-nixmox-agent" }:
let
  utils.escapeSystemdExecArgs = args: builtins.concatStringsSep " " (map (arg:
    builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON (toString arg))) args);
  lib = {
    mkEnableOption = name: { _type = "option"; default = false; description = "Whether to enable ${name}."; };
    mkOption = attrs: attrs // { _type = "option"; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    types = {
      package = "package"; str = "str"; bool = "bool";
      strMatching = re: "strMatching ${re}";
      enum = values: "enum";
      listOf = t: "listOf";
    };
  };
  cfg = {
    enable = true;
    inherit package;
    serverAddress = "10.40.0.2:7443";
    serviceName = "vaultwarden";
    enrollmentTokenFile = "/run/nixmox/enroll.json";
    stateDir = "/var/lib/nixmox-agent";
    logLevel = "info";
    extraFlags = [ "--log-level" "debug" "--odd arg's \"quoted\" 100% $HOME" ];
  };
  pkgs = { coreutils = "coreutils"; bash = "bash"; };
  module = import ../agent.nix {
    inherit lib pkgs utils;
    config = { services.nixmox-agent = cfg; nix.package = "nix"; };
  };
  unit = module.config.content.systemd.services.nixmox-agent;
in
{
  options = builtins.attrNames module.options.services.nixmox-agent;
  condition = module.config.condition;
  execStart = unit.serviceConfig.ExecStart;
  serviceConfig = unit.serviceConfig;
  restartIfChanged = unit.restartIfChanged;
  wantedBy = unit.wantedBy;
  tmpfiles = module.config.content.systemd.tmpfiles.rules;
}
