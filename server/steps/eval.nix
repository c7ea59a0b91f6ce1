# Evaluates every system of a rollout in one Nix evaluation (nixmox-server
# passes jobsFile, a JSON file — no command line argument holds more than
# 128 KiB — of an object: service -> { file, nixmox } for a Nix file, or
# { flake, attr, nixmox } for a flake output). For each it returns the
# derivation and output paths, whether it is a NixOS system, and whether
# that system enables nixmox-agent.
{ jobsFile }:
let
  js = builtins.fromJSON (builtins.readFile jobsFile);
  # As nix-build calls a file that is a function: with the arguments it
  # names (nixmox, a JSON string), its defaults for the rest.
  call = f: arg:
    if builtins.isFunction f
    then f (if (builtins.functionArgs f) ? nixmox then { nixmox = arg; } else { })
    else f;
  at = path: set: builtins.foldl' (s: n: s.${n}) set path;
  # Not named drvPath/outPath: JSON would print such a set as its outPath.
  result = d: nixos: agent: { drv = d.drvPath; out = d.outPath; inherit nixos agent; };
  one = name: j:
    if j ? file then
      result (call (import (/. + j.file)) j.nixmox) false true
    else
      let
        value = at j.attr (builtins.getFlake j.flake);
        # A nixosConfiguration learns what nixmox knows of its service as
        # the module argument `nixmox`.
        system = value.extendModules { modules = [{ _module.args.nixmox = builtins.fromJSON j.nixmox; }]; };
      in
      if value ? extendModules
      then result system.config.system.build.toplevel true (system.config.services.nixmox-agent.enable or false)
      else result value false true;
in
builtins.mapAttrs one js
