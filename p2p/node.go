package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sync/semaphore"
)

// DefaultPort is where an agent listens unless told otherwise, on TCP and
// on UDP for QUIC.
const DefaultPort = 4807

// DefaultListen are the addresses an agent listens on by default: every
// interface, both transports, IPv4 and IPv6.
var DefaultListen = []string{
	fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
	fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
	fmt.Sprintf("/ip6/::/tcp/%d", DefaultPort),
	fmt.Sprintf("/ip6/::/udp/%d/quic-v1", DefaultPort),
}

// MDNSService is the mDNS service name trove agents announce.
const MDNSService = "_trove._udp"

// Config configures a Node. Key and Trust are required.
type Config struct {
	Key    crypto.PrivKey
	Listen []string // multiaddrs; DefaultListen when empty
	Trust  *TrustGroup
	// ServePublic serves store contents to any peer, not only the trust group.
	ServePublic bool
	// Content is what the node serves; nil serves nothing.
	Content Content
	// Manifests answers the manifest protocol; nil serves none.
	Manifests ManifestSource
	// MDNS finds peers on the LAN.
	MDNS bool
	// StaticPeers are dialled at start and redialled with backoff when they drop.
	StaticPeers []peer.AddrInfo
	// DHT joins trove's Kademlia DHT (protocol prefix /trove), bootstrapping
	// from Bootstrap.
	DHT       bool
	Bootstrap []peer.AddrInfo
	// Group keeps the trust group's membership and answers machines that
	// come to join it (group.go); nil serves neither.
	Group  GroupKeeper
	Logger *slog.Logger
	// Host, when set, is a running libp2p host to build the node on instead
	// of starting one: a simulation's in-memory host (go-libp2p's mocknet,
	// as `trove bench sim` uses). The node owns it and closes it. Listen,
	// and the node's own transports, resource manager, connection manager,
	// connection gater and bandwidth reporter, do not apply to it; the
	// protocols still serve only the trust group.
	Host host.Host
	// RelayService relays for the trust group (relay.go): members behind
	// NATs reserve on it and reach each other through it.
	RelayService bool
	// TimeScale stretches the node's waits that are counted in chunk
	// times on a real link by this factor: how long it waits on peers to
	// pass a chunk on and tells a peer to wait for a slot (upload.go), and
	// how long it gathers gains before pushing them (haves.go). A
	// simulation whose links are N times slower than real ones sets N.
	// 0 means 1.
	TimeScale float64
}

// Node is a running libp2p host with trove's protocols, discovery and limits.
type Node struct {
	host   host.Host
	gater  *gater
	dht    *dht.IpfsDHT
	mdns   mdns.Service
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	static map[peer.ID]chan struct{} // peers kept connected → wakes their dialler
	ps     *pubsub.PubSub
	topics topics
	chunks chunkCounter
	bw     *metrics.BandwidthCounter
	// partial holds the fetches in progress whose verified chunks are
	// served, and the haves subscriptions served.
	partial partials
	// serves remembers whom each chunk went to just now (upload.go).
	serves serves
	// slots are the peers being sent chunks now (upload.go).
	slots slots
	relay *relayv2.Relay // with Config.RelayService
	punch *holepunch.Service
	fleet fleet
	seen  observed // public addresses members saw (punch.go)
	// punched are the direct connections hole punching made (punch.go).
	punched connSet
	// reserved are the connections relay reservations were made on
	// (relay.go).
	reserved connSet
	shrink   shrinkage // what compression saved, per peer (client.go)
	reach    *reach    // AutoNAT v2 (reach.go)
}

// keepAlive is how long a TCP connection may stay silent before this node
// pings its peer on it (yamux's keepalive, which closes the connection
// when the ping goes unanswered for yamux's write timeout of 10 s; QUIC
// keeps its connections alive itself). A NAT that forgets its mapping, or
// a relay that restarts without a word, leaves a connection that looks
// open to the end with nothing to send: a member serving through its
// relay, waiting for the reader's flow-control window, waits for packets
// the NAT now drops. yamux's own default of 30 s, beside a stall timeout
// of 15 s, left such a member out of reach until its peers gave up on
// it; the ping leaves by the NAT's new mapping, and the relay, seeing a
// connection it does not know, resets it at once.
const keepAlive = 5 * time.Second

// muxer is libp2p's yamux with keepAlive.
func muxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.KeepAliveInterval = keepAlive
	return &t
}

// connected says whether p has a live connection.
func (n *Node) connected(p peer.ID) bool {
	return n.host.Network().Connectedness(p) == network.Connected
}

// New starts a node.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Key == nil || cfg.Trust == nil {
		return nil, errors.New("p2p: Config needs Key and Trust")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = DefaultListen
	}
	listen := make([]ma.Multiaddr, 0, len(cfg.Listen))
	for _, s := range cfg.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", s, err)
		}
		listen = append(listen, a)
	}
	// trove exports no Prometheus metrics: libp2p's (on by default) cost a
	// room of 17 agents on two cores about 4% of its CPU, most of it the
	// resource manager tracing every memory reservation.
	rm, err := rcmgr.NewResourceManager(newLimiter(), rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(64, 256, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, err
	}
	n := &Node{
		gater: &gater{trust: cfg.Trust, public: cfg.ServePublic, joins: newJoiners(cfg.Group)}, log: cfg.Logger,
		static: map[peer.ID]chan struct{}{}, bw: metrics.NewBandwidthCounter(),
	}
	n.gater.dialBacks = &dialBacks{fromMember: n.fromMemberIP}
	n.serves.scale = cfg.TimeScale
	h := cfg.Host
	if h != nil {
		rm.Close()
		cm.Close()
	} else if h, err = libp2p.New(
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, muxer()),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(n.gater),
		libp2p.BandwidthReporter(n.bw),
		libp2p.DisableMetrics(),
		libp2p.SwarmOpts(swarm.WithDialRanker(rankDials)),
	); err != nil {
		return nil, fmt.Errorf("starting libp2p host: %w", err)
	}
	n.host = h
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if cfg.Host == nil {
		if err := n.startPunching(h, cfg.Trust); err != nil {
			n.Close()
			return nil, err
		}
		if err := n.startReach(h); err != nil {
			n.Close()
			return nil, err
		}
	}
	if cfg.RelayService {
		if err := n.startRelay(cfg.Trust); err != nil {
			n.Close()
			return nil, err
		}
	}
	if cfg.Content != nil {
		s := &server{node: n, content: cfg.Content, log: cfg.Logger, idle: idleTimeout, write: writeTimeout, memWait: memoryWait}
		h.SetStreamHandler(ProtoHave, s.serve("have", oneRequest(s, s.handleHave)))
		h.SetStreamHandler(ProtoInfo, s.serve("info", oneRequest(s, s.handleInfo)))
		h.SetStreamHandler(ProtoChunks, s.serve("chunks", s.handleChunks))
		h.SetStreamHandler(ProtoHaves, s.serve("haves", s.handleHaves))
		n.wg.Go(func() { every(n.ctx, havesRecheck, func() bool { s.recheck(); return true }) })
	}
	if cfg.Manifests != nil {
		s := &server{node: n, manifests: cfg.Manifests, log: cfg.Logger, idle: idleTimeout, write: writeTimeout, memWait: memoryWait,
			loads: semaphore.NewWeighted(1)}
		h.SetStreamHandler(ProtoManifest, s.serve("manifest", oneRequest(s, s.handleManifest)))
	}
	as := &server{node: n, log: cfg.Logger, idle: idleTimeout, write: writeTimeout}
	h.SetStreamHandler(ProtoAnnounce, as.serve("announce", as.handleAnnounce))
	h.SetStreamHandler(ProtoFleet, as.serve("fleet", as.handleFleet))
	if cfg.Group != nil {
		n.startGroups(cfg.Group)
	}
	n.ps, err = pubsub.NewGossipSub(n.ctx, h, pubsub.WithMaxMessageSize(maxAnnouncement*4),
		// A stranger let in to join hears no gossip.
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return n.gater.allowed(p) || !n.gater.admittedStranger(p) }))
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("starting gossipsub: %w", err)
	}
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: n.disconnected})
	if cfg.DHT {
		mode := dht.ModeServer
		n.dht, err = dht.New(h, dht.Mode(mode), dht.ProtocolPrefix("/trove"),
			dht.BootstrapPeers(cfg.Bootstrap...))
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("starting the DHT: %w", err)
		}
		for _, b := range cfg.Bootstrap {
			n.KeepConnected(b)
		}
	}
	for _, p := range cfg.StaticPeers {
		n.KeepConnected(p)
	}
	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(h, MDNSService, mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			n.Close()
			return nil, fmt.Errorf("starting mDNS: %w", err)
		}
	}
	return n, nil
}

// Host is the underlying libp2p host.
func (n *Node) Host() host.Host { return n.host }

// ID is this node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// AddrInfo is this node's ID and listen addresses.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// Trusted reports whether p may fetch from this node.
func (n *Node) Trusted(p peer.ID) bool { return n.gater.allowed(p) }

// Untrust drops p's connections after it left the trust group.
func (n *Node) Untrust(p peer.ID) {
	if !n.gater.allowed(p) {
		n.host.Network().ClosePeer(p)
	}
}

// Close stops discovery and the host.
func (n *Node) Close() error {
	n.cancel()
	if n.mdns != nil {
		n.mdns.Close()
	}
	if n.dht != nil {
		n.dht.Close()
	}
	if n.relay != nil {
		n.relay.Close()
	}
	if n.punch != nil {
		n.punch.Close()
	}
	err := n.host.Close()
	n.wg.Wait()
	if n.reach != nil {
		n.reach.close()
	}
	return err
}

// Protect keeps the connection manager from trimming p while tag is held,
// for peers in the middle of a transfer.
func (n *Node) Protect(p peer.ID, tag string) { n.host.ConnManager().Protect(p, tag) }

// Unprotect releases Protect.
func (n *Node) Unprotect(p peer.ID, tag string) { n.host.ConnManager().Unprotect(p, tag) }

// Connect dials p.
func (n *Node) Connect(ctx context.Context, p peer.AddrInfo) error {
	// Dial now, whatever backoff an earlier failed dial left: a provider
	// the DHT just returned may have been unreachable a moment ago (or
	// dialled without addresses by a background lookup).
	// Through a relay (a /p2p-circuit address) the dial is not direct,
	// and the backoff is cleared instead: a member that had no
	// reservation a moment ago (the relay restarted) has one now, and
	// the agent paces these dials itself.
	if slices.ContainsFunc(p.Addrs, isRelayed) {
		n.clearBackoff(p.ID)
	} else {
		ctx = network.WithForceDirectDial(ctx, "asked to connect")
	}
	return n.host.Connect(ctx, p)
}

// clearBackoff forgets libp2p's dial backoff for p.
func (n *Node) clearBackoff(p peer.ID) {
	if sw, ok := n.host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(p)
	}
}

type mdnsNotifee struct{ n *Node }

// HandlePeerFound connects to trust-group peers found on the LAN and keeps
// them connected; others are ignored (they could not fetch from us, and we
// find what we need through peers we trust).
func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	n := m.n
	if ai.ID == n.host.ID() || !n.gater.trust.Contains(ai.ID) {
		return
	}
	n.log.Debug("found peer on the LAN", "peer", ai.ID, "addrs", ai.Addrs)
	n.KeepConnected(ai)
}

// KeepConnected dials p now and again with backoff whenever it is not
// connected, until the node closes. Calling it again for a peer already
// kept (mDNS saw it again, say) wakes the dialler at once and clears
// libp2p's own dial backoff, so a healed link reconnects in moments.
func (n *Node) KeepConnected(ai peer.AddrInfo) {
	n.mu.Lock()
	wake, running := n.static[ai.ID]
	if !running {
		wake = make(chan struct{}, 1)
		n.static[ai.ID] = wake
	}
	n.mu.Unlock()
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
	if running {
		if n.host.Network().Connectedness(ai.ID) != network.Connected {
			n.clearBackoff(ai.ID)
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		backoff := time.Second
		for {
			if n.host.Network().Connectedness(ai.ID) == network.Connected {
				// Reset only for a connection that lasted: a peer whose gater
				// refuses us completes the handshake and then closes.
				backoff = time.Second
			} else {
				ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
				err := n.host.Connect(ctx, peer.AddrInfo{ID: ai.ID, Addrs: n.host.Peerstore().Addrs(ai.ID)})
				cancel()
				if err != nil {
					n.log.Debug("cannot reach peer; will retry", "peer", ai.ID, "in", backoff, "err", err)
				} else {
					n.log.Debug("dialled peer", "peer", ai.ID)
				}
				backoff = min(backoff*2, 2*time.Minute)
			}
			// Jitter keeps a room of agents from redialling in lockstep.
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-n.ctx.Done():
				return
			case <-wake:
			case <-time.After(wait):
			}
			n.mu.Lock()
			kept := n.static[ai.ID] == wake
			n.mu.Unlock()
			if !kept { // Forget
				return
			}
		}
	}()
}

func (n *Node) disconnected(nw network.Network, c network.Conn) {
	n.log.Debug("disconnected", "peer", c.RemotePeer())
	if p := c.RemotePeer(); nw.Connectedness(p) != network.Connected {
		// What is kept per connected peer goes with its last connection.
		n.shrink.forget(p)
		n.punched.forget(p)
		n.reserved.forget(p)
	}
}
