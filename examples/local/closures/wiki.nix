# wiki: a static page standing for an app with a database: its health
# check also logs in to the wiki database as its owner.
{ nixmox ? "{}" }:
let
  lib = import ./lib.nix { inherit nixmox; };
  site = derivation {
    name = "wiki-site";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    index = builtins.toFile "index.html" ''
      <!doctype html>
      <title>wiki</title>
      <h1>wiki</h1>
      <p>Its database lives on the postgresql service.</p>
    '';
    args = [ "-c" "/bin/mkdir -p $out && /bin/cp $index $out/index.html" ];
  };
in
lib.nginx { name = "wiki"; root = site; }
