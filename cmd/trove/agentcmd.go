package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/p2p"
)

func newAgentCmd(a *app) *cobra.Command {
	var (
		listen, peers, bootstrap []string
		relays                   []string
		mdns, dht, relayService  bool
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

For machines behind NATs (a laptop at home, one at the office): run
--relay-service on a machine they can both reach (a home server, a small
VPS), a member of the group; give the others --relay with its address.
Each keeps a reservation there, members reach each other through it, and
hole punching then makes the connection direct where the NATs allow.
The relay serves its trust group only.

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
  trove agent --relay-service                       # on a reachable machine of the group
  trove agent --relay /ip4/203.0.113.7/tcp/4807/p2p/12D3KooW...
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
				Bootstrap: bootstrap, Relays: relays, RelayService: relayService, Serve: serve, LogFormat: logFormat}, cmd.Flags().Changed)
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
			kind, err := a.kind(home)
			if err != nil {
				return err
			}
			ag, err := agent.Start(cmd.Context(), agent.Config{
				Home: home, StoreDir: a.storeDir, Kind: kind, Listen: set.Listen, MDNS: set.MDNS, Peers: set.Peers,
				DHT: set.DHT, Bootstrap: set.Bootstrap, Relays: set.Relays, RelayService: set.RelayService,
				Public: set.Serve == "public", Logger: log,
				API: localapi.API, Cache: cacheCfg, Sources: a.absAll(sources),
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
	f.StringArrayVar(&relays, "relay", nil, "keep a reservation on the group's relay at `MULTIADDR` ending in /p2p/<id> (repeatable)")
	f.BoolVar(&relayService, "relay-service", false, "relay for the trust group (on a machine the others can reach)")
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

func newStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's state: peer ID, addresses, peers, store size",
		Long: `Show the running agent's peer ID and addresses, how many peers are
connected, the store's size and path count, and transfers in flight.

An agent that is starting is waited for. Without an agent it says so and
exits 1 (with --json it prints {"running": false, "home": ...}); it does
not open the store, so it never stands in the way of an agent starting.`,
		Example: `  trove status
  trove status --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := call(cmd.Context(), a, localapi.Status, localapi.StatusRequest{}, nil)
			if errors.Is(err, agent.ErrNoAgent) && asJSON {
				home, _ := a.homeDir()
				if err := writeJSON(a.stdout, notRunning{Home: home}); err != nil {
					return err
				}
			}
			return show(a, asJSON, st, err, a.printStatus)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printStatus(st *agent.Status) error {
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "peer ID:\t%s\n", st.PeerID)
	for i, addr := range st.Addrs {
		label := ""
		if i == 0 {
			label = "addresses:"
		}
		fmt.Fprintf(w, "%s\t%s\n", label, addr)
	}
	fmt.Fprintf(w, "peers:\t%d connected, %d in the trust group\n", st.PeersConnected, st.TrustGroup)
	fmt.Fprintf(w, "reachable:\t%s\n", reachSummary(st))
	fmt.Fprintf(w, "store:\t%d %s, %s\n", st.StorePaths, plural(st.StorePaths, "path", "paths"), humanBytes(st.StoreBytes))
	fmt.Fprintf(w, "transfers:\t%d in flight\n", st.Transfers)
	fmt.Fprintf(w, "uptime:\t%s\n", time.Duration(st.UptimeSeconds)*time.Second)
	if st.Public {
		fmt.Fprintf(w, "serving:\tPUBLIC (anyone may fetch)\n")
	}
	for _, f := range st.Follows {
		fmt.Fprintf(w, "following %s:\t%s\n", f.Name, followSummary(f))
		fmt.Fprintf(w, "\tprofile %s\n", f.Profile)
		if f.State != "" {
			fmt.Fprintf(w, "\tnow %s\n", f.State)
		}
		if f.LastError != "" {
			fmt.Fprintf(w, "\tlast error (%s): %s\n", f.LastErrorAt.Format("15:04:05"), f.LastError)
		}
		if f.Hint != "" {
			fmt.Fprintf(w, "\t%s\n", f.Hint)
		}
	}
	return w.Flush()
}

// reachSummary says whether members elsewhere can dial this machine.
func reachSummary(st *agent.Status) string {
	switch st.Reachability {
	case "public":
		return "yes, from the internet (" + strings.Join(st.ReachableAddrs, ", ") + ")"
	case "private":
		s := "no: behind a NAT or firewall (members reach it through a relay, or by hole punching)"
		if st.RelayService {
			s += "; as a relay it is of no use to members outside its network: forward its port, or run the relay on a machine with a public address"
		}
		return s
	}
	return "not known yet (no member outside this network has checked)"
}

// notRunning is what `trove status --json` prints when no agent runs; a
// running agent's status (agent.Status) has "running": true.
type notRunning struct {
	Running bool   `json:"running"`
	Home    string `json:"home"`
}

func newPeersCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "peers",
		Short: "List connected and trusted peers with their traffic",
		Long: `List the running agent's peers: each connected peer and each member of the
trust group, with its name, addresses, transport, latency, bytes in and
out, and whether it is trusted. STATE says "connected (relayed)" for a
peer reached only through a relay and "connected (hole-punched)" for one
reached directly through NATs by hole punching ("via" in --json: direct,
hole-punched or relayed). Needs a running agent (one that is starting is
waited for).`,
		Example: `  trove peers
  trove peers --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := call(cmd.Context(), a, localapi.Peers, localapi.PeersRequest{}, nil)
			return show(a, asJSON, ps, err, a.printPeers)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printPeers(ps []p2p.PeerStatus) error {
	if len(ps) == 0 {
		fmt.Fprintln(a.stderr, "no peers: none connected and the trust group is empty")
		return nil
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tNAME\tSTATE\tTRANSPORT\tLATENCY\tIN\tOUT\tTRUSTED\tADDRESS")
	for _, p := range ps {
		state := "offline"
		if p.Connected {
			state = "connected"
		}
		if p.Via == p2p.ConnRelayed || p.Via == p2p.ConnPunched {
			state += " (" + p.Via + ")"
		}
		addr := ""
		if len(p.Addrs) > 0 {
			addr = p.Addrs[0]
		}
		lat := "-"
		if p.Latency > 0 {
			lat = p.Latency.Round(time.Microsecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", shortID(p.ID), p.Name, state, p.Transport, lat,
			humanBytes(uint64(p.BytesIn)), humanBytes(uint64(p.BytesOut)), p.Trusted, addr)
	}
	return w.Flush()
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}

// followSummary says in one line where a followed configuration stands.
func followSummary(f agent.FollowStatus) string {
	var b strings.Builder
	if f.Phase != "" {
		fmt.Fprintf(&b, "%s: ", strings.ToUpper(f.Phase))
	}
	switch {
	case !f.Activate:
		fmt.Fprintf(&b, "fetching only; newest known generation %d", f.Newest)
	case f.Current == 0:
		fmt.Fprintf(&b, "no generation active yet; newest known %d", f.Newest)
	default:
		fmt.Fprintf(&b, "generation %d active; newest known %d", f.Current, f.Newest)
	}
	if f.Announced > 0 {
		fmt.Fprintf(&b, " (%d announced, fetching its manifest)", f.Announced)
	}
	if f.HeldBack && f.Phase == agent.PhaseHeldBack {
		fmt.Fprintf(&b, " (it had %d)", f.Highest)
	}
	if n := len(f.Failed); n > 0 {
		last := f.Failed[n-1]
		fmt.Fprintf(&b, "; generation %d failed here (%s)", last.Generation, last.Reason)
	}
	return b.String()
}

// cacheFlags are trove agent's flags for the Nix binary-cache endpoint.
type cacheFlags struct {
	listen    string
	fromPeers bool
	key       string
	timeout   time.Duration
}

func (c *cacheFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.listen, "cache-listen", "", "serve the Nix binary-cache protocol on `HOST:PORT` (e.g. 127.0.0.1:4808);\nanyone who can reach it can read the whole store")
	f.BoolVar(&c.fromPeers, "cache-from-peers", false, "fetch paths the cache is asked for and lacks from peers")
	f.StringVar(&c.key, "cache-key", "", "sign narinfos with $TROVE_HOME/keys/`NAME`.secret (default: the only key there)")
	f.DurationVar(&c.timeout, "cache-timeout", nixcache.DefaultTimeout, "how long to look among peers for a missing path before answering 404")
}

// config checks the flags and loads the signing key.
func (c *cacheFlags) config(cmd *cobra.Command, home string, log *slog.Logger) (agent.CacheConfig, error) {
	f := cmd.Flags()
	if c.listen == "" {
		for _, name := range []string{"cache-from-peers", "cache-key", "cache-timeout"} {
			if f.Changed(name) {
				return agent.CacheConfig{}, usagef("--%s needs --cache-listen HOST:PORT", name)
			}
		}
		return agent.CacheConfig{}, nil
	}
	host, _, err := net.SplitHostPort(c.listen)
	if err != nil {
		return agent.CacheConfig{}, usagef("--cache-listen %q: want HOST:PORT, such as 127.0.0.1:4808", c.listen)
	}
	if c.timeout <= 0 {
		return agent.CacheConfig{}, usagef("--cache-timeout %s: want a positive duration, such as 5s", c.timeout)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Warn("the binary cache is reachable beyond this machine: anyone who reaches it can read every path in the store", "addr", c.listen)
	}
	cc := agent.CacheConfig{Listen: c.listen, FromPeers: c.fromPeers, Timeout: c.timeout}
	if c.key == "" {
		switch n := len(manifest.SigningKeys(manifest.KeysDir(home))); n {
		case 0:
			log.Warn("no signing key: narinfos carry only the paths' own signatures; make one with `trove key generate NAME` for Nix to trust this cache")
			return cc, nil
		case 1:
		default:
			return cc, fmt.Errorf("%d signing keys in %s: choose the cache's with --cache-key NAME", n, manifest.KeysDir(home))
		}
	}
	key, err := manifest.LoadSigningKey(manifest.KeysDir(home), c.key)
	if err != nil {
		return cc, err
	}
	cc.Key = &key
	return cc, nil
}

func newFleetCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "fleet NAME",
		Short: "Show every machine following a configuration, and how its rollout goes",
		Long: `List every machine of the trust group that follows the configuration NAME,
as each last told the group: its generation, its phase (fetching, pending,
activating, checking, active, failed, rolled back, held back), its last
activation, the generations that failed there, and when it was last heard
from (STALE after a minute of silence). Below, for each generation, how
many machines run it, failed it, or have not got it yet.

Each follower tells the group within a second of a change and every 15
seconds; a status speaks only for the machine whose key signed it. Works on
any member, the publisher included. Needs a running agent.`,
		Example: `  trove fleet laptop
  trove fleet web --json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := call(cmd.Context(), a, localapi.ShowFleet, localapi.FleetRequest{Name: args[0]}, nil)
			return show(a, asJSON, f, err, a.printFleet)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printFleet(f agent.Fleet) error {
	if len(f.Machines) == 0 {
		fmt.Fprintf(a.stderr, "no machine of the group has said it follows %s (yet): run `trove follow %s` on them\n", f.Name, f.Name)
		return nil
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MACHINE\tPEER\tGENERATION\tPHASE\tLAST ACTIVATION\tFAILED\tSEEN")
	now := time.Now()
	for _, m := range f.Machines {
		name := m.Name
		if m.Self {
			name += " (this one)"
		}
		if name == "" {
			name = "-"
		}
		phase := m.Phase
		if m.Pending != "" {
			phase += " (" + m.Pending + ")"
		}
		last := "-"
		if m.LastResult != "" {
			last = fmt.Sprintf("%d %s", m.LastGen, m.LastResult)
			if !m.LastAt.IsZero() {
				last += " " + ago(now.Sub(m.LastAt))
			}
		}
		failed := "-"
		if len(m.Failed) > 0 {
			parts := make([]string, len(m.Failed))
			for i, g := range m.Failed {
				parts[i] = strconv.FormatUint(g, 10)
			}
			failed = strings.Join(parts, ",")
		}
		seen := ago(now.Sub(m.LastSeen))
		if m.Stale {
			seen = "STALE " + seen
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", name, shortID(m.ID), m.Current, phase, last, failed, seen)
	}
	w.Flush()
	fmt.Fprintln(a.stdout)
	for _, g := range f.Generations {
		fmt.Fprintf(a.stdout, "generation %d: %d running, %d failed, %d not yet\n", g.Generation, g.Running, g.Failed, g.NotYet)
	}
	return nil
}

// ago is how long ago d was, to the second.
func ago(d time.Duration) string {
	if d < time.Second {
		return "now"
	}
	return d.Round(time.Second).String() + " ago"
}
