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
      description = "The nixmox-agent package (a build of ./cmd/nixmox-agent).";
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
      after = [ "network-online.target" ];
      # The agent runs switch-to-configuration itself: a switch must not stop
      # or restart the agent in the middle of it. A new agent takes over at
      # the next boot or `systemctl restart nixmox-agent`.
      restartIfChanged = false;
      stopIfChanged = false;
      path = [ config.nix.package pkgs.coreutils pkgs.bash ];
      serviceConfig = {
        ExecStart = utils.escapeSystemdExecArgs ([
          "${cfg.package}/bin/nixmox-agent"
          "--server" cfg.serverAddress
          "--service" cfg.serviceName
          "--enroll-file" cfg.enrollmentTokenFile
          "--state-dir" cfg.stateDir
          "--profile" "/nix/var/nix/profiles/system"
          "--log-level" cfg.logLevel
        ] ++ cfg.extraFlags);
        Restart = "always";
        RestartSec = "5s";
        UMask = "0077";
        # Root, by necessity: it switches the whole system. Only what a
        # switch never needs is closed (a switch sets the hostname, sysctls
        # and setuid wrappers, so those stay open).
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
