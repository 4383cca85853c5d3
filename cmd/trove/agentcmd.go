package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/p2p"
)

func newAgentCmd(a *app) *cobra.Command {
	var (
		listen, peers, bootstrap []string
		mdns, dht                bool
		serve, logFormat         string
		cache                    cacheFlags
		sources                  []string
	)
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: own the store, find peers, and serve them",
		Long: `Run trove's agent until interrupted (Ctrl-C or SIGTERM stop it cleanly).

The agent owns the store while it runs: other trove commands in the same
home pass through it (over the control socket $TROVE_HOME/agent.sock,
mode 0600), so they work the same with or without an agent. A command
started while the agent starts waits for it; an agent started while a
command holds the store waits for that command to end (up to 30 s).

It listens on TCP and QUIC (default port 4807 on every interface), finds
peers by mDNS on the LAN, dials the static peers given with --peer or in
config.toml (and redials them with backoff when they drop), and with --dht
joins trove's Kademlia DHT.

Only peers in the trust group (trove peer allow) may fetch from it: others
are refused right after the connection handshake and get nothing, not even
an answer about which paths exist. A store can hold secrets (keys, tokens,
private configuration), so serving is closed by default; --serve public
opens it to anyone who can reach the agent.

Settings come from $TROVE_HOME/config.toml ([agent] listen, peers, mdns,
dht, bootstrap, serve, log_format, and timeout: how long an activation
command may run, 10m by default); flags override them.

With --cache-listen HOST:PORT it also serves the Nix binary-cache protocol
there, so Nix can substitute from this store: add http://HOST:PORT to
Nix's substituters and the public half of the cache's signing key
(--cache-key NAME, made by trove key generate) to its trusted-public-keys.
With --cache-from-peers, a path Nix asks for that the store lacks is
fetched from peers first (what the trusted keys vouch for), so every Nix
build on the machine fetches from the LAN; a path no peer has within
--cache-timeout is answered 404.

With --source DIR (repeatable) it imports the trove bundles (files named
*.trove, in DIR or up to three directories down) found under DIR, such as
a mounted USB stick, on start and every 30 seconds: each is verified as by
trove bundle import, and a followed configuration (follow --activate)
whose new generation a bundle brought is activated.`,
		Example: `  trove agent
  trove agent --listen /ip4/0.0.0.0/tcp/4807 --peer /ip4/192.168.1.7/tcp/4807/p2p/12D3KooW...
  trove agent --dht --bootstrap /ip4/10.0.0.2/tcp/4807/p2p/12D3KooW...
  trove agent --log-format json
  trove agent --cache-listen 127.0.0.1:4808 --cache-from-peers --cache-key laptop-1
  trove agent --source /media/usb`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			home, err := a.homeDir()
			if err != nil {
				return err
			}
			fc, err := agent.LoadConfig(home)
			if err != nil {
				return err
			}
			set, err := fc.Merge(agent.Settings{Listen: listen, Peers: peers, MDNS: mdns, DHT: dht,
				Bootstrap: bootstrap, Serve: serve, LogFormat: logFormat}, cmd.Flags().Changed)
			if err != nil {
				return usageError{err}
			}
			log, err := a.agentLogger(set.LogFormat)
			if err != nil {
				return err
			}
			cacheCfg, err := cache.config(cmd, home, log)
			if err != nil {
				return err
			}
			ag, err := agent.Start(cmd.Context(), agent.Config{
				Home: home, StoreDir: a.storeDir, Listen: set.Listen, MDNS: set.MDNS, Peers: set.Peers,
				DHT: set.DHT, Bootstrap: set.Bootstrap, Public: set.Serve == "public", Logger: log,
				API: localapi.API, Cache: cacheCfg, Sources: absAll(a, sources),
				ActivationTimeout: fc.Agent.ActivationTimeout(),
			})
			if err != nil {
				return err
			}
			if set.Serve == "public" {
				log.Warn("serving store contents to ANY peer that connects (--serve public)")
			}
			<-cmd.Context().Done()
			log.Info("stopping")
			return ag.Close()
		},
	}
	f := c.Flags()
	f.StringArrayVar(&listen, "listen", p2p.DefaultListen, "listen on `MULTIADDR` (repeatable)")
	f.StringArrayVar(&peers, "peer", nil, "keep connected to the peer at `MULTIADDR` ending in /p2p/<id> (repeatable)")
	f.BoolVar(&mdns, "mdns", true, "find peers on the LAN by mDNS")
	f.BoolVar(&dht, "dht", false, "join trove's Kademlia DHT")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "DHT bootstrap peer `MULTIADDR` (repeatable)")
	f.StringVar(&serve, "serve", "trusted", "who may fetch from this agent: trusted (the trust group) or public (anyone)")
	f.StringVar(&logFormat, "log-format", "", "log format: text or json (default text)")
	cache.register(f)
	f.StringArrayVar(&sources, "source", nil, "import the trove bundles under `DIR` (a USB stick), now and every 30s (repeatable)")
	return c
}

// agentLogger logs to stderr as text (on a terminal or not) or JSON.
func (a *app) agentLogger(format string) (*slog.Logger, error) {
	level := slog.LevelInfo
	if a.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

func newIDCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "id",
		Short: "Print this machine's peer ID and addresses, to pair with other machines",
		Long: `Print this agent's peer ID and the addresses it listens on. Give them to
another machine's "trove peer allow" (the ID) and "--peer" (an address) to
pair the two. The identity key is created on first use in $TROVE_HOME/keys.

With a running agent the addresses are the live ones; otherwise they are
the configured listen addresses.`,
		Example: `  trove id
  trove id --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := call(cmd.Context(), a, localapi.ID, localapi.IDRequest{}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, out)
			}
			fmt.Fprintln(a.stdout, out.ID)
			if !out.Running {
				fmt.Fprintln(a.stderr, "(no agent running: these are the addresses it will listen on)")
			}
			for _, addr := range out.Addrs {
				fmt.Fprintln(a.stdout, addr)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
