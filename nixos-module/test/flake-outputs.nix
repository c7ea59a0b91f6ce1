# Evaluates ../../flake.nix's outputs with a stub nixpkgs: the real nixpkgs
# lib (../shared/nixos-eval), and a buildGoModule that returns what it is
# given — what the flake and package.nix ask nixpkgs to build, unbuilt —
# and the flake's agent module's package default. nixpkgs itself cannot
# be fetched here; see docs/nixos.md.
{ nixpkgs }:
let
  lib = import (nixpkgs + "/lib");
  flake = import ../../flake.nix;
  pkgsFor = system: {
    inherit lib;
    stdenv.hostPlatform.system = system;
    buildGoModule = attrs: attrs // { type = "derivation"; name = "${attrs.pname}-${attrs.version}"; inherit system; };
    callPackage = fn: args: import fn ({ inherit lib; inherit (pkgsFor system) buildGoModule; } // args);
  };
  stubNixpkgs = { inherit lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor; };
  self = flake.outputs { inherit self; nixpkgs = stubNixpkgs; };
  agentModule = self.nixosModules.agent { inherit lib; pkgs = pkgsFor "x86_64-linux"; };
  summary = p: { inherit (p) name pname subPackages vendorHash ldflags; cgo = p.env.CGO_ENABLED; src = builtins.attrNames (builtins.readDir p.src); };
in
{
  inputs = builtins.attrNames flake.inputs;
  systems = builtins.attrNames self.packages;
  packages = lib.mapAttrs (_: summary) self.packages.x86_64-linux;
  moduleImports = map toString agentModule.imports;
  agentPackageDefault = agentModule.services.nixmox-agent.package.content.name;
}
