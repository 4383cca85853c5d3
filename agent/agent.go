package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// Config configures an agent.
type Config struct {
	Home     string
	StoreDir string
	// Kind is the store to work on: the home's own when zero (see
	// store.Kind; --store and config.toml's store choose).
	Kind store.Kind
	// Listen, MDNS, Peers, DHT, Bootstrap and Public: see p2p.Config.
	Listen    []string
	MDNS      bool
	Peers     []string // multiaddrs with /p2p/<id>
	DHT       bool
	Bootstrap []string
	// Relays are members' relay addresses to keep a reservation on;
	// RelayService relays for the group (p2p/relay.go).
	Relays       []string
	RelayService bool
	Public       bool
	Logger       *slog.Logger
	// API serves the local API (localapi.Handler) on the control socket
	// beside GET /v1/status and /v1/peers; nil serves only those.
	API func(*Agent) http.Handler
	// SyncInterval is how often written trees are made durable (default 30s).
	SyncInterval time.Duration
	// Sources are directories whose trove bundles are imported (source.go).
	Sources []string
	// FollowProgress, if set, sees the progress of every sync the agent
	// makes to follow a configuration (the demo draws it).
	FollowProgress func(config string, p fetch.Progress)
	// Cache is the Nix binary-cache endpoint (cache.go).
	Cache CacheConfig
	// ActivationTimeout bounds the activation commands of followed
	// configurations that set none (default profile.DefaultActivationTimeout).
	ActivationTimeout time.Duration
}

// Agent is a running trove agent.
type Agent struct {
	cfg   Config
	Home  string
	Store *store.Store
	Node  *p2p.Node
	Trust *p2p.TrustGroup
	log   *slog.Logger

	key     crypto.PrivKey
	members *Members       // the group's records; guarded by trustMu (group.go)
	invites *group.Invites // the invitations open here

	// Keys are the trusted public keys; History the known manifests.
	Keys    *manifest.Keyring
	History *manifest.History

	trustMu    sync.Mutex // serialises trust-group edits and their saving
	followMu   sync.Mutex // guards subscribed, followers and follows.json
	subscribed map[string]bool
	followers  map[string]*follower // by configuration name (follow.go)
	kicks      chan struct{}        // wakes the learner (follow.go)
	bg         context.Context      // lives as long as the agent
	srv        *http.Server
	ln         net.Listener
	stop       context.CancelFunc
	wg         sync.WaitGroup
	started    time.Time
	transfers  atomic.Int32
	cache      net.Listener // the binary-cache endpoint's, or nil (cache.go)
	fleet      fleetBook    // what members say of their followed configurations (fleet.go)

	// ready is closed once Node and bg are set, or Start failed before
	// (bg is then nil). The node serves the group protocol from within
	// p2p.New, before Start has its result, and a member's push arriving
	// then reached a nil Node (keeper, group.go).
	ready chan struct{}
}

// BeginTransfer counts a sync in flight for Status; call the result when
// it ends.
func (a *Agent) BeginTransfer() (end func()) {
	a.transfers.Add(1)
	return func() { a.transfers.Add(-1) }
}

// Logger is the agent's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }

// DefaultHome is the trove home when none is given, as DESIGN.md says:
// /var/lib/trove for root (euid 0), otherwise $XDG_DATA_HOME/trove,
// falling back to ~/.local/share/trove.
func DefaultHome(getenv func(string) string, euid int) (string, error) {
	if euid == 0 {
		return "/var/lib/trove", nil
	}
	if x := getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "trove"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "trove"), nil
	}
	return "", errors.New("cannot choose a trove home: neither XDG_DATA_HOME nor HOME is set; pass --home DIR or set TROVE_HOME")
}

// SocketPath is the control socket of a home.
func SocketPath(home string) string { return filepath.Join(home, "agent.sock") }

// ParsePeerAddrs parses multiaddrs that end in /p2p/<peer ID>.
func ParsePeerAddrs(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("peer address %q: %w", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return nil, fmt.Errorf("peer address %q must end in /p2p/<peer ID> (see `trove id` on that machine): %w", s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// Start opens the store, starts the node and the control API.
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 30 * time.Second
	}
	statics, err := ParsePeerAddrs(cfg.Peers)
	if err != nil {
		return nil, err
	}
	boots, err := ParsePeerAddrs(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	relays, err := ParsePeerAddrs(cfg.Relays)
	if err != nil {
		return nil, err
	}
	// The store's lock first: from then on, commands see an agent
	// starting and go through it rather than edit the files read below.
	s, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(cfg.Home, "keys"))
	if err != nil {
		s.Close()
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		s.Close()
		return nil, err
	}
	members, err := LoadMembers(cfg.Home, self)
	if err != nil {
		s.Close()
		return nil, err
	}
	trust := p2p.NewTrustGroup(members.Trust())
	invites, err := group.OpenInvites(group.InvitesPath(cfg.Home))
	if err != nil {
		s.Close()
		return nil, err
	}
	keys, err := manifest.LoadKeyring(manifest.TrustedKeysPath(cfg.Home))
	if err != nil {
		s.Close()
		return nil, err
	}
	a := &Agent{cfg: cfg, Home: cfg.Home, Store: s, Trust: trust, log: cfg.Logger, started: time.Now(), key: key, members: members, invites: invites,
		Keys: keys, History: manifest.OpenHistory(cfg.Home, keys), subscribed: map[string]bool{}, followers: map[string]*follower{}, kicks: make(chan struct{}, 1),
		ready: make(chan struct{})}
	markReady := sync.OnceFunc(func() { close(a.ready) })
	defer markReady() // a failed start: the keeper's calls do nothing
	a.Node, err = p2p.New(ctx, p2p.Config{
		Key: key, Listen: cfg.Listen, Trust: trust, ServePublic: cfg.Public, Content: p2p.StoreContent{Store: s}, Manifests: historyBytes{a.History},
		MDNS: cfg.MDNS, StaticPeers: append(statics, relays...), DHT: cfg.DHT, Bootstrap: boots, Group: keeper{a},
		RelayService: cfg.RelayService,
		Logger:       cfg.Logger.With("component", "p2p"),
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := a.serveControl(); err != nil {
		a.Node.Close()
		s.Close()
		return nil, err
	}
	// Commands that found the store held by a starting agent wait for
	// the socket, not for this; it is for those who look later.
	if err := s.SetRole(store.RoleAgent); err != nil {
		a.log.Warn("recording that the agent is ready", "err", err)
	}
	bg, stop := context.WithCancel(context.Background())
	a.stop, a.bg = stop, bg
	markReady()
	a.wg.Add(1)
	go a.syncLoop(bg)
	for _, r := range relays {
		a.wg.Add(1)
		go a.relayLoop(bg, r)
	}
	if len(relays) > 0 {
		a.wg.Add(1)
		go a.punchLoop(bg)
	}
	if a.Store.Backend() == store.BackendNix {
		a.wg.Add(1)
		go a.indexLoop(bg)
	}
	if err := a.startCache(bg); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.startFollowing(bg); err != nil {
		a.Close()
		return nil, err
	}
	a.startSources(bg)
	a.startGroup()
	if err := a.startFleet(bg); err != nil {
		a.Close()
		return nil, err
	}
	a.log.Info("agent started", "peer", a.Node.ID(), "addrs", a.Node.Host().Addrs(), "home", cfg.Home)
	return a, nil
}

// storeWait bounds how long a starting agent waits for another process
// to let go of the store.
const storeWait = 30 * time.Second

// openStore opens the home's store for a starting agent. A one-shot
// command holding it (a `trove status` started beside `trove agent`) lets
// go when it ends, and so does an agent that is stopping: the agent waits
// for them, up to storeWait, rather than fail. Another agent running in
// the home is an error at once.
func openStore(ctx context.Context, cfg Config) (*store.Store, error) {
	if _, err := Dial(cfg.Home); err == nil {
		return nil, fmt.Errorf("another agent is already running in %s (its control socket %s answers): stop it first, or give this one another --home", cfg.Home, SocketPath(cfg.Home))
	}
	opts := store.Options{StoreDir: cfg.StoreDir, Logger: cfg.Logger.With("component", "store"), Role: store.RoleAgentStarting, Kind: cfg.Kind}
	deadline := time.Now().Add(storeWait)
	waited := false
	for {
		s, err := store.Open(cfg.Home, opts)
		var locked *store.LockedError
		if !errors.As(err, &locked) {
			return s, err
		}
		h := locked.Holder
		if h.Role == store.RoleAgentStarting || h.Role == store.RoleAgent {
			return nil, fmt.Errorf("another agent (pid %d) is already running in %s: stop it first, or give this one another --home", h.PID, cfg.Home)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the store in %s is still in use by %v after %v: stop that process, then start the agent again", cfg.Home, h, storeWait)
		}
		if !waited {
			cfg.Logger.Info("waiting for another process to let go of the store", "pid", h.PID, "holder", string(h.Role), "timeout", storeWait)
			waited = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for pid %d to let go of the store: %w", h.PID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *Agent) syncLoop(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.Store.Sync(); err != nil {
				a.log.Warn("syncing the store to disk failed", "err", err)
			}
		}
	}
}

// Close stops the control API and the node, syncs and closes the store.
func (a *Agent) Close() error {
	// Commands that find the store held from now on wait for it to be free.
	if err := a.Store.SetRole(store.RoleAgentStopping); err != nil {
		a.log.Warn("recording that the agent stops", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
	a.stop()
	a.wg.Wait()
	nerr := a.Node.Close()
	serr := a.Store.Sync()
	cerr := a.Store.Close()
	os.Remove(SocketPath(a.cfg.Home))
	return errors.Join(nerr, serr, cerr)
}

// Allow makes a peer a member of the group: a record signed by this
// machine, saved and pushed to every member, so that all of them trust it.
func (a *Agent) Allow(id peer.ID, name string) error {
	return a.change(id, name, false)
}

// Remove removes a peer from the group: every member hears of it and
// closes its connections to it, this one at once. It reports whether the
// peer was trusted here.
func (a *Agent) Remove(id peer.ID) (bool, error) {
	was := a.Trust.Contains(id)
	return was, a.change(id, "", true)
}

// Status is what `trove status` shows.
type Status struct {
	// Running is true: `trove status --json` prints {"running": false}
	// when no agent runs.
	Running        bool     `json:"running"`
	PeerID         string   `json:"peerId"`
	Addrs          []string `json:"addrs"`
	PeersConnected int      `json:"peersConnected"`
	TrustGroup     int      `json:"trustGroup"`
	StorePaths     int      `json:"storePaths"`
	StoreBytes     uint64   `json:"storeBytes"`
	Transfers      int      `json:"transfersInFlight"`
	UptimeSeconds  int64    `json:"uptimeSeconds"`
	Public         bool     `json:"servesPublic"`
	// Reachability is whether members outside this machine's network can
	// dial it (AutoNAT v2: public, private or unknown), and the addresses
	// they reached.
	Reachability   string   `json:"reachability"`
	ReachableAddrs []string `json:"reachableAddrs,omitempty"`
	RelayService   bool     `json:"relayService"`
	// Follows are the followed configurations and where each stands.
	Follows []FollowStatus `json:"follows"`
}

// Status reports on the running agent.
func (a *Agent) Status(ctx context.Context) (*Status, error) {
	n, bytes, err := a.Store.StoreSize(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{
		Running: true, PeerID: a.Node.ID().String(), PeersConnected: len(a.Node.ConnectedPeers()),
		TrustGroup: len(a.Trust.Peers()), StorePaths: n, StoreBytes: bytes,
		UptimeSeconds: int64(time.Since(a.started).Seconds()), Public: a.cfg.Public,
		Transfers: int(a.transfers.Load()),
	}
	for _, m := range a.Node.Host().Addrs() {
		st.Addrs = append(st.Addrs, m.String()+"/p2p/"+st.PeerID)
	}
	r, reached := a.Node.ReachableAddrs()
	st.Reachability, st.RelayService = string(r), a.cfg.RelayService
	for _, m := range reached {
		st.ReachableAddrs = append(st.ReachableAddrs, m.String()+"/p2p/"+st.PeerID)
	}
	if st.Follows, err = a.FollowStatuses(); err != nil {
		return nil, err
	}
	return st, nil
}

// IndexInterval is how often an agent on Nix's store looks for paths Nix
// added or deleted, to index the new ones (so that their chunks can be
// reused by syncs) and forget the deleted. Serving does not wait for it:
// peers are answered from Nix's own metadata, and a path not indexed yet
// is indexed when first asked for.
const IndexInterval = 10 * time.Second

// indexLoop keeps the chunk indexes of Nix's store up to date, in the
// background at low priority: two workers, one round at a time.
func (a *Agent) indexLoop(ctx context.Context) {
	defer a.wg.Done()
	for {
		start := time.Now()
		st, err := a.Store.Reindex(ctx, 2)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.log.Warn("indexing Nix's store", "err", err)
		case st.Indexed > 0 || st.Dropped > 0:
			secs := time.Since(start).Seconds()
			a.log.Info("indexed Nix's store", "paths", st.Paths, "indexed", st.Indexed, "bytes", st.NARBytes,
				"MB/s", int(float64(st.NARBytes)/1e6/max(secs, 1e-3)), "forgotten", st.Dropped)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(IndexInterval):
		}
	}
}

// relayLoop keeps a reservation on the relay r (a member running
// --relay-service), so that members behind other NATs reach this agent
// through it, and reaches through r every member not connected otherwise:
// a member is found by its peer ID alone. Hole punching then tries to
// make each such connection direct. A reservation lasts an hour: it is
// renewed every 20 minutes, and retried with the members every
// relayEvery while it fails. The relay forgets it when the connection to
// it closes (the relay restarted, or a NAT between them gave this agent
// another public port), so it is made again then, even when the agent is
// connected to the relay anew by then (p2p.Node.Reserved).
func (a *Agent) relayLoop(ctx context.Context, r peer.AddrInfo) {
	defer a.wg.Done()
	lost := a.Node.Disconnections(ctx)
	var renew time.Time
	for {
		if time.Now().After(renew) || !a.Node.Reserved(r.ID) {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := a.Node.Reserve(rctx, r)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				a.log.Warn("no reservation on the relay", "relay", r.ID, "err", err)
			default:
				a.log.Info("reserved on the relay", "relay", r.ID)
				renew = time.Now().Add(20 * time.Minute)
			}
		}
		a.reachThrough(ctx, r)
		select {
		case <-ctx.Done():
			return
		case <-time.After(relayEvery):
		case <-lost:
			// Whoever dropped (the relay, or a member through it) may
			// need a moment to reserve again.
			select {
			case <-ctx.Done():
				return
			case <-time.After(relayRetry):
			}
		}
	}
}

// relayRetry is how long after a lost connection (to the relay, or to a
// member) an agent tries again through the relay.
var relayRetry = time.Second

// relayEvery is how often an agent tries to reach, through its relays,
// the members it is not connected to.
var relayEvery = 10 * time.Second

// Punching: a member reached only through a relay is asked to punch a
// hole after punchFirst (the member's own side tries at once when the
// relayed connection reaches it, and may still be at it), then again
// after a failure, waiting twice as long each time up to punchMax: a NAT
// that maps each destination to another port (symmetric) never lets a
// punch through, and the relayed connection carries everything meanwhile.
var (
	punchFirst = 2 * time.Second
	punchMax   = 5 * time.Minute
)

// punchLoop tries to make every relayed connection to a member direct.
func (a *Agent) punchLoop(ctx context.Context) {
	defer a.wg.Done()
	type state struct {
		next    time.Time
		wait    time.Duration
		running bool
	}
	var mu sync.Mutex
	members := map[peer.ID]*state{}
	var running sync.WaitGroup
	defer running.Wait()
	tick := time.NewTicker(punchFirst / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		mu.Lock()
		for p := range a.Trust.Peers() {
			if a.Node.ConnKind(p) != p2p.ConnRelayed {
				delete(members, p)
				continue
			}
			st := members[p]
			if st == nil {
				// Both ends run this loop; the one with the greater
				// ID starts later, so that their first tries do not
				// meet (one of two simultaneous punches is refused).
				first := punchFirst
				if a.Node.ID() > p {
					first += punchFirst
				}
				members[p] = &state{next: now.Add(first), wait: punchFirst}
				continue
			}
			if st.running || now.Before(st.next) {
				continue
			}
			st.running = true
			running.Add(1)
			go func() {
				defer running.Done()
				pctx, cancel := context.WithTimeout(ctx, time.Minute)
				err := a.Node.Punch(pctx, p)
				cancel()
				mu.Lock()
				defer mu.Unlock()
				st.running = false
				if err != nil {
					st.wait = min(2*st.wait, punchMax)
					st.next = time.Now().Add(st.wait)
					a.log.Debug("no direct connection to the member; staying on the relay", "peer", p, "err", err, "retry in", st.wait)
				}
			}()
		}
		mu.Unlock()
	}
}

// reachThrough connects through the relay r to every member of the
// trust group not connected now.
func (a *Agent) reachThrough(ctx context.Context, r peer.AddrInfo) {
	for p := range a.Trust.Peers() {
		if p == r.ID || p == a.Node.ID() || a.Node.ConnKind(p) != "" {
			continue
		}
		via, err := p2p.RelayAddr(r, p)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := a.Node.Connect(cctx, via); err == nil {
			a.log.Info("reached a member through the relay", "peer", p, "relay", r.ID)
		}
		cancel()
	}
}
