# Evaluates ../agent.nix with the real NixOS module system: nixpkgs' lib
# (lib.evalModules), NixOS's systemd unit options and the code that turns
# systemd.services into unit text, and its assertions module — the files
# in ../shared/nixos-eval (see its README). Nothing is built: pkgs is a
# stub of unbuilt derivations, and options that live in NixOS modules not
# present here are declared below with their upstream types.
#
#   nix-instantiate --eval --strict --json nixos.nix \
#     --arg nixpkgs /path/to/nixos-eval/nixpkgs --argstr package /nix/store/...-nixmox-agent \
#     [--argstr configFile /abs/path/to/more-config.nix]
{ nixpkgs, package, configFile ? null }:
let
  lib = import (nixpkgs + "/lib");
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  inherit (pkgs) stub;
  eval = lib.evalModules {
    class = "nixos";
    modules = [
      (nixpkgs + "/nixos/modules/misc/assertions.nix")
      (nixpkgs + "/nixos/modules/system/boot/systemd-excerpt.nix")
      ../agent.nix
      ({ config, ... }: {
        _module.args = {
          inherit pkgs;
          utils = import (nixpkgs + "/nixos/lib/utils.nix") { inherit lib config pkgs; };
        };
      })
      # Options of NixOS modules that are not in nixos-eval, with their
      # upstream types.
      {
        options.nix.package = lib.mkOption { type = lib.types.package; default = pkgs.nix; };
        options.systemd.tmpfiles.rules = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      }
      {
        services.nixmox-agent = {
          enable = true;
          package = lib.mkDefault (stub "nixmox-agent" // { outPath = package; });
          serverAddress = lib.mkDefault "10.40.0.2:7443";
          serviceName = lib.mkDefault "vaultwarden";
        };
      }
    ] ++ lib.optional (configFile != null) (/. + configFile);
  };
  cfg = eval.config;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
in
{
  options = builtins.attrNames eval.options.services.nixmox-agent;
  assertions = failed;
  warnings = cfg.warnings;
  unit = cfg.systemd.units."nixmox-agent.service".text;
  serviceConfig = cfg.systemd.services.nixmox-agent.serviceConfig;
  restartIfChanged = cfg.systemd.services.nixmox-agent.restartIfChanged;
  stopIfChanged = cfg.systemd.services.nixmox-agent.stopIfChanged;
  tmpfiles = cfg.systemd.tmpfiles.rules;
}
