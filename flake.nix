{
  description = "nixmox: roll a homelab of NixOS containers on Proxmox out from one manifest";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        nixmox-server = pkgs.callPackage ./package.nix { program = "nixmox-server"; };
        nixmox-agent = pkgs.callPackage ./package.nix { program = "nixmox-agent"; };
        nixmox-cli = pkgs.callPackage ./package.nix { program = "nixmox-cli"; };
        default = nixmox-cli;
      });

      # The agent's module, its package this flake's build. Import it into
      # each service's nixosConfiguration and set serverAddress and
      # serviceName (docs/nixos.md has a whole example flake).
      nixosModules.agent = { lib, pkgs, ... }: {
        imports = [ ./nixos-module/agent.nix ];
        services.nixmox-agent.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.nixmox-agent;
      };
      nixosModules.default = self.nixosModules.agent;
    };
}
