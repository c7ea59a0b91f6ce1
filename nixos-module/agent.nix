# services.nixmox-agent: the agent on each NixOS container. It enrolls once
# with the token file nixmox-server issued for this container's service,
# then keeps a stream to the server and switches the system to the
# generations the server asks for.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.nixmox-agent;
  inherit (lib) mkEnableOption mkIf mkOption types;
in
{
  options.services.nixmox-agent = {
    enable = mkEnableOption "nixmox-agent, which switches this container to the generations nixmox-server asks for";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ../package.nix { }";
      description = "The nixmox-agent package: built from this source tree by default; the flake's nixosModules.agent sets it to the flake's own build.";
    };

    serverAddress = mkOption {
      type = types.str;
      example = "10.40.0.2:7443";
      description = "host:port of nixmox-server's agent listener (mutual TLS).";
    };

    serviceName = mkOption {
      type = types.strMatching "[a-z0-9][a-z0-9_-]*";
      example = "vaultwarden";
      description = "The manifest service this container runs. Its certificate will name it; the server trusts nothing else the agent says.";
    };

    enrollmentTokenFile = mkOption {
      type = types.str;
      default = "/run/nixmox/enroll.json";
      description = ''
        The file `nixmox-server token SERVICE` wrote (one-time token and CA), delivered to this
        container only (the Proxmox provider does). Read once, at the first start; keep it out of
        the Nix store: it is a path string, not a path.
      '';
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/nixmox-agent";
      description = "The agent's key, certificate, CA, secrets and state (0700).";
    };

    logLevel = mkOption {
      type = types.enum [ "trace" "debug" "info" "warn" "error" ];
      default = "info";
      description = "Log level.";
    };

    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More command line flags for nixmox-agent.";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.nixmox-agent = {
      description = "nixmox-agent: switches this container to the generations nixmox-server asks for";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      # The agent a new Proxmox container was brought up with (a transient
      # unit) hands over to this one: it is stopped first, and this agent
      # finishes the switch it was waiting on (its switch record).
      conflicts = [ "nixmox-agent-bootstrap.service" ];
      after = [ "network-online.target" "nixmox-agent-bootstrap.service" ];
      # The agent runs switch-to-configuration itself: a switch must not stop
      # or restart the agent in the middle of it. A new agent takes over at
      # the next boot or `systemctl restart nixmox-agent`.
      restartIfChanged = false;
      stopIfChanged = false;
      path = [ config.nix.package pkgs.coreutils pkgs.bash ];
      # Nix keeps its binary-cache database under $XDG_CACHE_HOME/nix: the
      # agent's own cache directory, so that a pull never writes to /root.
      environment.XDG_CACHE_HOME = "/var/cache/nixmox-agent";
      serviceConfig = {
        ExecStart = utils.escapeSystemdExecArgs ([
          "${cfg.package}/bin/nixmox-agent"
          "--server" cfg.serverAddress
          "--service" cfg.serviceName
          "--enroll-file" cfg.enrollmentTokenFile
          "--state-dir" cfg.stateDir
          "--profile" "/nix/var/nix/profiles/system"
          "--current-system" "/run/current-system"
          # Each switch runs as the transient unit nixmox-agent-switch, in
          # its own cgroup, as nixos-rebuild runs it: nothing that happens
          # to this unit (a stop, a restart, a newer generation) kills it.
          "--systemd-run" "${config.systemd.package}/bin/systemd-run"
          "--log-level" cfg.logLevel
        ] ++ cfg.extraFlags);
        Restart = "always";
        RestartSec = "5s";
        UMask = "0077";
        CacheDirectory = "nixmox-agent";
        CacheDirectoryMode = "0700";
        # Root, by necessity: it pulls into the store, sets the system
        # profile and asks systemd for the switch unit (which runs outside
        # this sandbox). Only what none of that needs is closed; what is
        # kept is tried by test/e2e's TestAgentPullUnderTheUnitsSandbox.
        PrivateTmp = true;
        ProtectHome = "read-only";
        LockPersonality = true;
        RestrictRealtime = true;
        SystemCallArchitectures = "native";
      };
    };

    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0700 root root -" ];
  };
}
