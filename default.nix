# For users without flakes:
#   nix-build -A nixmox-agent          # with <nixpkgs> from NIX_PATH
#   imports = [ /path/to/nixmox/nixos-module ];   # the agent's module
{ pkgs ? import <nixpkgs> { } }:
{
  nixmox-server = pkgs.callPackage ./package.nix { program = "nixmox-server"; };
  nixmox-agent = pkgs.callPackage ./package.nix { program = "nixmox-agent"; };
  nixmox-cli = pkgs.callPackage ./package.nix { program = "nixmox-cli"; };
}
