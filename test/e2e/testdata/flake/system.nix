# A stand-in NixOS system for tests, evaluated with the real module system
# and NixOS's systemd unit code (../shared/nixos-eval: nixpkgs cannot be
# fetched here, so nothing of nixpkgs is built). Its toplevel has what the
# agent needs of a NixOS system — bin/switch-to-configuration,
# nixos-version, etc/systemd/system/nixmox-agent.service when the
# configuration enables the agent — and a switch-to-configuration that
# copies the system's name and the facts nixmox gave it (the module
# argument nixmox) to markerDir/NAME.active.
{ nixpkgs, name, markerDir, modules ? [ ] }:
let
  lib = import (nixpkgs + "/lib");
  # ./stub-pkgs.nix is nixos-module/test/stub-pkgs.nix, copied beside it.
  pkgs = import ./stub-pkgs.nix { inherit lib; };
in
lib.evalModules {
  class = "nixos";
  modules = [
    (nixpkgs + "/nixos/modules/misc/assertions.nix")
    (nixpkgs + "/nixos/modules/system/boot/systemd-excerpt.nix")
    ({ config, ... }: {
      _module.args = {
        inherit pkgs;
        utils = import (nixpkgs + "/nixos/lib/utils.nix") { inherit lib config pkgs; };
        nixmox = lib.mkDefault { };
      };
    })
    ({ config, nixmox, ... }:
      let
        unit = config.systemd.units."nixmox-agent.service".text or "";
      in
      {
        options.nix.package = lib.mkOption { type = lib.types.package; default = pkgs.nix; };
        options.systemd.tmpfiles.rules = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
        options.system.build = lib.mkOption { type = lib.types.lazyAttrsOf lib.types.unspecified; default = { }; };
        config.system.build.toplevel = derivation {
          name = "nixos-system-${name}-standin";
          system = builtins.currentSystem;
          builder = "/bin/sh";
          # The unit refers to the stubs' store paths, which are never
          # built: its text without their context.
          agentUnit = builtins.unsafeDiscardStringContext unit;
          facts = builtins.toJSON { inherit name nixmox; };
          marker = "${markerDir}/${name}.active";
          args = [ "-c" ''
            /bin/mkdir -p $out/bin $out/etc/systemd/system
            printf '%s\n' "$facts" > $out/facts.json
            echo 25.11.standin > $out/nixos-version
            if [ -n "$agentUnit" ]; then printf '%s' "$agentUnit" > $out/etc/systemd/system/nixmox-agent.service; fi
            printf '#!/bin/sh\n/bin/cp %s/facts.json %s\n' "$out" "$marker" > $out/bin/switch-to-configuration
            /bin/chmod +x $out/bin/switch-to-configuration
          '' ];
        };
      })
  ] ++ modules;
}
