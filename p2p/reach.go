package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/autonatv2"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability (AutoNAT v2): whether a machine on the internet can dial
// this node. Each node asks members, one at a time, to dial back one of
// its public addresses (its public listen addresses and what members
// observed, the addresses hole punching offers) on a fresh connection
// from another identity; an address a member reached is reachable, one
// it could not is not. Every node answers its members' requests (and
// only theirs), dialling from a second host of its own that listens
// nowhere.
//
// The dial-back comes from a stranger, whom the gater would refuse. While
// one of its own checks is in flight, a node admits a few inbound
// strangers for dialBackWindow; they are cut off after it and served
// nothing meanwhile (every protocol that serves checks membership).
//
// What it is for: `trove status` says whether this machine is reachable
// (a relay must be), and the agent warns when --relay-service runs on a
// machine nobody can dial.

// Reachability says whether members outside this node's network can dial
// it.
type Reachability string

const (
	ReachUnknown Reachability = "unknown" // no address checked yet
	ReachPublic  Reachability = "public"  // a member dialled an address back
	ReachPrivate Reachability = "private" // every address checked failed: behind a NAT or firewall
)

// reachRecheck is how long a result holds before the address is checked
// again; reachRetry is how soon a node asks again while some address is
// unchecked (no member answered, or all were busy).
var (
	reachRecheck = 10 * time.Minute
	reachRetry   = 2 * time.Second
)

// dialBackWindow is how long an admitted dial-back stranger may stay
// connected; maxDialBacks is how many may be at once.
const (
	dialBackWindow = 15 * time.Second
	maxDialBacks   = 4
)

// reach keeps the results of this node's reachability checks.
type reach struct {
	an      *autonatv2.AutoNAT
	dialer  host.Host
	private bool // check private addresses too (tests on loopback)

	mu      sync.Mutex
	results map[string]reachResult // by address
}

type reachResult struct {
	reachable bool
	at        time.Time
}

// dialBacks admits the strangers members dial back from while a check of
// this node's is in flight, and only from the address of a machine a
// member is connected from (fromMember: the member's own host dials
// back; from behind a NAT, by the NAT's address, which is the one its
// connection here comes from).
type dialBacks struct {
	admitted   admitted
	fromMember func(remote ma.Multiaddr) bool

	mu       sync.Mutex
	checking int
}

func (d *dialBacks) begin() {
	d.mu.Lock()
	d.checking++
	d.mu.Unlock()
}

func (d *dialBacks) end() {
	d.mu.Lock()
	d.checking--
	d.mu.Unlock()
}

func (d *dialBacks) admit(p peer.ID, remote ma.Multiaddr) bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	checking := d.checking > 0
	d.mu.Unlock()
	return checking && d.fromMember(remote) && d.admitted.add(p, maxDialBacks, dialBackWindow)
}

// fromMemberIP says whether remote's IP is one a member is connected to
// this node from, directly (it is asked only during a check, after the
// host started).
func (n *Node) fromMemberIP(remote ma.Multiaddr) bool {
	ip, err := manet.ToIP(remote)
	if err != nil {
		return false
	}
	for _, c := range n.host.Network().Conns() {
		if !n.gater.trust.Contains(c.RemotePeer()) || isRelayed(c.RemoteMultiaddr()) {
			continue
		}
		if cip, err := manet.ToIP(c.RemoteMultiaddr()); err == nil && cip.Equal(ip) {
			return true
		}
	}
	return false
}

func (d *dialBacks) stranger(p peer.ID) bool { return d != nil && d.admitted.has(p) }

// membersOnly is a host whose AutoNAT server refuses non-members: it
// dials for the group, not for whoever asks. (The dial-back handler is
// for the strangers a check admits.)
type membersOnly struct {
	host.Host
	g *gater
}

func (h membersOnly) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	if pid != autonatv2.DialProtocol {
		h.Host.SetStreamHandler(pid, handler)
		return
	}
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		if !h.g.allowed(s.Conn().RemotePeer()) {
			s.Reset()
			return
		}
		handler(s)
	})
}

// startReach runs the AutoNAT v2 client and server and the loop that
// checks this node's public addresses.
func (n *Node) startReach(h host.Host) error {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return err
	}
	dialer, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return fmt.Errorf("starting the reachability dialer: %w", err)
	}
	opts := []autonatv2.AutoNATOption{}
	if reachPrivateAddrs {
		opts = append(opts, autonatv2.AllowPrivateAddrs)
	}
	an, err := autonatv2.New(dialer, opts...)
	if err != nil {
		dialer.Close()
		return fmt.Errorf("starting AutoNAT: %w", err)
	}
	if err := an.Start(membersOnly{h, n.gater}); err != nil {
		dialer.Close()
		return fmt.Errorf("starting AutoNAT: %w", err)
	}
	n.reach = &reach{an: an, dialer: dialer, private: reachPrivateAddrs, results: map[string]reachResult{}}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.reachLoop()
	}()
	return nil
}

// reachPrivateAddrs lets tests on loopback check private addresses.
var reachPrivateAddrs = false

func (r *reach) close() {
	r.an.Close()
	r.dialer.Close()
}

// reachLoop checks every candidate address not checked lately, one
// request at a time.
func (n *Node) reachLoop() {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(n.checkReach(n.ctx, time.Now()))
	}
}

// checkReach asks one member to dial back the candidates due, and says
// when to ask again.
func (n *Node) checkReach(ctx context.Context, now time.Time) time.Duration {
	var due []autonatv2.Request
	for _, a := range n.reachCandidates() {
		if res, ok := n.reach.get(a); !ok || now.Sub(res.at) > reachRecheck {
			due = append(due, autonatv2.Request{Addr: a, SendDialData: true})
		}
	}
	if len(due) == 0 {
		return reachRetry
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n.gater.dialBacks.begin()
	res, err := n.reach.an.GetReachability(ctx, due)
	n.gater.dialBacks.end()
	switch {
	case errors.Is(err, autonatv2.ErrNoPeers):
		return reachRetry // no member to ask, or each asked lately
	case err != nil:
		n.log.Debug("reachability check failed", "err", err)
		return reachRetry
	case res.AllAddrsRefused || res.Addr == nil:
		return reachRetry
	}
	switch res.Reachability {
	case network.ReachabilityPublic, network.ReachabilityPrivate:
		was := n.Reachability()
		n.reach.set(res.Addr, res.Reachability == network.ReachabilityPublic, time.Now())
		if now := n.Reachability(); now != was {
			n.log.Info("reachability", "is", now, "addr", res.Addr)
			if now == ReachPrivate && n.relay != nil {
				n.log.Warn("this machine relays for its group, but members outside its network cannot dial it: forward its port, or run the relay on a machine with a public address")
			}
		}
	}
	// More addresses due: ask the next member soon.
	return time.Second
}

// reachCandidates are the addresses worth checking: the public ones hole
// punching offers.
func (n *Node) reachCandidates() []ma.Multiaddr {
	if !n.reach.private {
		return n.punchAddrs()
	}
	return ma.Unique(slices.DeleteFunc(append(n.host.Addrs(), n.seen.list()...), isRelayed))
}

func (r *reach) get(a ma.Multiaddr) (reachResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.results[string(a.Bytes())]
	return res, ok
}

// maxReachResults bounds the results kept (addresses come and go with
// NAT mappings); the oldest go first.
const maxReachResults = 64

func (r *reach) set(a ma.Multiaddr, reachable bool, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[string(a.Bytes())] = reachResult{reachable, at}
	keepNewest(r.results, maxReachResults, func(res reachResult) time.Time { return res.at })
}

// Reachability says whether members outside this node's network can dial
// it, from the latest check of each address it has now.
func (n *Node) Reachability() Reachability {
	r, _ := n.ReachableAddrs()
	return r
}

// ReachableAddrs is Reachability and the addresses members reached.
func (n *Node) ReachableAddrs() (Reachability, []ma.Multiaddr) {
	if n.reach == nil {
		return ReachUnknown, nil
	}
	var reachable []ma.Multiaddr
	checked := 0
	for _, a := range n.reachCandidates() {
		res, ok := n.reach.get(a)
		if !ok {
			continue
		}
		checked++
		if res.reachable {
			reachable = append(reachable, a)
		}
	}
	switch {
	case len(reachable) > 0:
		return ReachPublic, slices.Clip(reachable)
	case checked > 0:
		return ReachPrivate, nil
	}
	return ReachUnknown, nil
}
