# NixOS module for the trove agent.
#
#   imports = [ /path/to/trove/nixos/module.nix ];
#   services.trove = {
#     enable = true;                        # works on /nix/store itself (store = "nix")
#     package = trove;                      # a derivation providing bin/trove
#     peers = [ "/ip4/192.168.1.7/tcp/4807/p2p/12D3KooW..." ];
#     cacheListen = "127.0.0.1:4808";       # Nix substitutes from the swarm
#     cacheFromPeers = true;
#     cacheKey = "laptop-1";                # trove key generate laptop-1 (as root)
#     cachePublicKey = "laptop-1:BASE64..."; # what that printed
#   };
#
# The agent's home is /var/lib/trove: its identity, trust group (pair with
# `trove peer allow PEERID` as root), trusted keys and store live there.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.trove;
  inherit (lib) mkEnableOption mkOption mkIf types optional optionals concatMap escapeShellArgs;

  args =
    [ "--home" "/var/lib/trove" "--store" cfg.store "agent" "--log-format" "json" ]
    ++ concatMap (l: [ "--listen" l ]) cfg.listen
    ++ concatMap (p: [ "--peer" p ]) cfg.peers
    ++ [ "--mdns=${lib.boolToString cfg.mdns}" "--dht=${lib.boolToString cfg.dht}" ]
    ++ concatMap (b: [ "--bootstrap" b ]) cfg.bootstrap
    ++ [ "--serve" cfg.serve ]
    ++ optionals (cfg.cacheListen != null) (
      [ "--cache-listen" cfg.cacheListen "--cache-timeout" cfg.cacheTimeout ]
      ++ optional cfg.cacheFromPeers "--cache-from-peers"
      ++ optionals (cfg.cacheKey != null) [ "--cache-key" cfg.cacheKey ]
    )
    ++ cfg.extraArgs;
in
{
  options.services.trove = {
    enable = mkEnableOption "the trove agent, which shares the Nix store with your other machines peer to peer";

    package = mkOption {
      type = types.package;
      description = "The trove package (providing bin/trove).";
    };

    store = mkOption {
      type = types.enum [ "nix" "embedded" ];
      default = "nix";
      description = ''
        The store the agent works on (--store): "nix" shares this machine's
        /nix/store as it is and delivers what it fetches into it, so a
        followed configuration is a Nix profile (/nix/var/nix/profiles/NAME)
        that nixos-rebuild and nix-env see; "embedded" keeps trove's own store
        under /var/lib/trove. A home keeps the store it was made with.
      '';
    };

    listen = mkOption {
      type = types.listOf types.str;
      default = [ "/ip4/0.0.0.0/tcp/4807" "/ip4/0.0.0.0/udp/4807/quic-v1" ];
      description = "Multiaddrs the agent listens on for peers (--listen).";
    };

    peers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/ip4/192.168.1.7/tcp/4807/p2p/12D3KooW..." ];
      description = "Peers to keep connected to, ending in /p2p/<peer ID> (--peer).";
    };

    mdns = mkOption {
      type = types.bool;
      default = true;
      description = "Find peers on the LAN by mDNS (--mdns).";
    };

    dht = mkOption {
      type = types.bool;
      default = false;
      description = "Join trove's Kademlia DHT (--dht).";
    };

    bootstrap = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "DHT bootstrap peers (--bootstrap).";
    };

    serve = mkOption {
      type = types.enum [ "trusted" "public" ];
      default = "trusted";
      description = "Who may fetch from this agent: the trust group, or anyone (--serve).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open TCP and UDP port 4807 (the default listen port) and mDNS in the firewall.";
    };

    cacheListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:4808";
      description = ''
        Serve the Nix binary-cache protocol on this HOST:PORT (--cache-listen)
        and add it to nix.settings.substituters. Anyone who can reach it can
        read the whole store: keep it on loopback.
      '';
    };

    cacheFromPeers = mkOption {
      type = types.bool;
      default = true;
      description = "Fetch what Nix asks the cache for from peers when the store lacks it (--cache-from-peers).";
    };

    cacheKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "laptop-1";
      description = ''
        Name of the key in /var/lib/trove/keys that signs the cache's
        narinfos (--cache-key); make it with `trove --home /var/lib/trove key generate NAME`.
        Null uses the only key there, if any.
      '';
    };

    cachePublicKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "laptop-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0=";
      description = "Public half of the cache's key, added to nix.settings.trusted-public-keys.";
    };

    cacheTimeout = mkOption {
      type = types.str;
      default = "5s";
      description = "How long the cache looks among peers for a missing path before answering 404 (--cache-timeout).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More arguments for `trove agent`.";
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];

    systemd.services.trove = {
      description = "trove agent: share a Nix-style store with your other machines";
      documentation = [ "https://github.com/trove-p2p/trove" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "simple";
        ExecStart = "${cfg.package}/bin/trove ${escapeShellArgs args}";
        Restart = "on-failure";
        RestartSec = "5s";
        KillSignal = "SIGTERM";
        TimeoutStopSec = "30s";
        StateDirectory = "trove";
        StateDirectoryMode = "0750";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ "/var/lib/trove" ];
        ProtectHome = "read-only";
        PrivateTmp = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        LockPersonality = true;
        LimitNOFILE = 65536;
      };
    };

    networking.firewall = mkIf cfg.openFirewall {
      allowedTCPPorts = [ 4807 ];
      allowedUDPPorts = [ 4807 5353 ];
    };

    nix.settings = mkIf (cfg.cacheListen != null) {
      substituters = [ "http://${cfg.cacheListen}" ];
      trusted-public-keys = optional (cfg.cachePublicKey != null) cfg.cachePublicKey;
    };

    warnings = optional (cfg.cacheListen != null && cfg.cachePublicKey == null)
      "services.trove.cacheListen is set without cachePublicKey: Nix will only take paths from it that a key it already trusts signed.";
  };
}
