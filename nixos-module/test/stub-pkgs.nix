# A stub pkgs for evaluating NixOS modules without nixpkgs: unbuilt
# derivations whose store paths are computed, not built, so that unit text
# refers to them exactly as NixOS would write it; the builders NixOS's
# systemd code calls return such stubs too. Used by nixos.nix and by the
# stand-in systems of test/e2e (testdata/flake/system.nix).
{ lib }:
let
  stub = name: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; };
in
lib.genAttrs [ "systemd" "coreutils" "bash" "findutils" "gnugrep" "gnused" "nix" ] stub // {
  inherit stub;
  writeText = name: text: builtins.toFile name text;
  writeTextFile = { name, text, ... }: builtins.toFile name text;
  runCommand = name: env: script: stub name;
  writeShellScriptBin = name: text: stub name;
  writeShellApplication = { name, ... }: stub name;
  buildPackages = { xorg.lndir = stub "lndir"; };
}
