# The nixmox NixOS modules: import this in each container's configuration.
{ imports = [ ./agent.nix ]; }
