# One of nixmox's programs, built from this tree with nixpkgs' buildGoModule:
#   pkgs.callPackage ./package.nix { program = "nixmox-agent"; }
# flake.nix and default.nix use it for nixmox-server, nixmox-agent and
# nixmox-cli. vendorHash is the hash of `go mod vendor` for go.sum: when
# go.sum changes, `make vendor-hash` prints the new one (see docs/nixos.md).
{ lib, buildGoModule, program ? "nixmox-cli" }:

assert lib.elem program [ "nixmox-server" "nixmox-agent" "nixmox-cli" ];

buildGoModule {
  pname = program;
  version = "0.1.0-dev";
  # Only what the build reads: Go sources and the module files.
  src = lib.cleanSourceWith {
    src = ./.;
    filter = path: type:
      let name = baseNameOf path; in
      if type == "directory" then !(lib.hasPrefix "." name) && name != "bin"
      else lib.hasSuffix ".go" name || name == "go.mod" || name == "go.sum";
  };
  vendorHash = "sha256-DEPCMGZxIt2XS3wtq4VNZLX+r4/nM/lmVVnSc0D2NJ4=";
  subPackages = [ "cmd/${program}" ];
  # Static, as `make bin` builds them: the agent is pushed into stock
  # containers before their first NixOS generation.
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" ];
  # The tests need Nix, Terraform, network namespaces and ../shared: they
  # run with `make test`, not in the sandbox.
  doCheck = false;
  meta = {
    description = "Rolls a homelab of NixOS containers on Proxmox out from one manifest";
    mainProgram = program;
    platforms = lib.platforms.linux;
  };
}
