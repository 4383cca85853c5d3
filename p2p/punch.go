package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Hole punching (DCUtR) turns a relayed connection between two members
// behind NATs into a direct one. Each side needs to know the public
// address its NAT gives its listening port. libp2p's own service learns
// it from strangers' identify replies and trusts an address only once
// several peers agree; a trust group usually has one public machine
// (its relay), so that never happens, and the service it starts cannot
// be asked to try again once a first attempt came too early. trove runs
// the service itself instead:
//
//   - the addresses it offers are the public listen addresses plus what
//     members (never strangers) saw this node connect from, on a
//     connection made from a listening port, so the NAT mapping they saw
//     is the one a punch goes through;
//   - Punch asks it to try again, which the agent does, with back-off,
//     for as long as a member is reached only through a relay.
//
// Behind a NAT that maps every destination to another port (symmetric),
// no punch succeeds and the relayed connection stays: slower, but it
// carries everything.

// observed is what members saw of this node's public addresses.
type observed struct {
	mu    sync.Mutex
	addrs map[peer.ID]observation // by the member that saw it
}

type observation struct {
	addr ma.Multiaddr
	at   time.Time
}

// maxObservers bounds observed: the newest reports are kept.
const maxObservers = 32

func (o *observed) add(p peer.ID, a ma.Multiaddr, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.addrs == nil {
		o.addrs = map[peer.ID]observation{}
	}
	o.addrs[p] = observation{a, now}
	keepNewest(o.addrs, maxObservers, func(ob observation) time.Time { return ob.at })
}

// keepNewest deletes the oldest entries of m (by at) until it holds at
// most max.
func keepNewest[K comparable, V any](m map[K]V, max int, at func(V) time.Time) {
	for len(m) > max {
		var oldest K
		first := true
		for k, v := range m {
			if first || at(v).Before(at(m[oldest])) {
				oldest, first = k, false
			}
		}
		delete(m, oldest)
	}
}

func (o *observed) list() []ma.Multiaddr {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]ma.Multiaddr, 0, len(o.addrs))
	for _, ob := range o.addrs {
		out = append(out, ob.addr)
	}
	return out
}

// punchAddrs is what this node offers a peer to punch towards: its
// public listen addresses and what members observed.
func (n *Node) punchAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range append(n.host.Addrs(), n.seen.list()...) {
		if manet.IsPublicAddr(a) && !isRelayed(a) {
			out = append(out, a)
		}
	}
	return ma.Unique(out)
}

// fromListenPort says whether local, a connection's own address, uses one
// of the ports this node listens on (libp2p dials TCP and QUIC from them).
func fromListenPort(local ma.Multiaddr, listen []ma.Multiaddr) bool {
	_, rest := ma.SplitFirst(local)
	if len(rest) == 0 {
		return false
	}
	for _, l := range listen {
		if _, lrest := ma.SplitFirst(l); rest.Equal(lrest) {
			return true
		}
	}
	return false
}

// startPunching runs the hole punching service and records what members
// see of this node's addresses.
func (n *Node) startPunching(h host.Host, trust *TrustGroup) error {
	idh, ok := h.(interface{ IDService() identify.IDService })
	if !ok {
		return nil // a host made by the caller: no hole punching
	}
	n.onEvent(n.ctx, new(event.EvtPeerIdentificationCompleted), func(e any) {
		id := e.(event.EvtPeerIdentificationCompleted)
		if id.ObservedAddr == nil || id.Conn == nil || !trust.Contains(id.Peer) ||
			isRelayed(id.Conn.RemoteMultiaddr()) || !manet.IsPublicAddr(id.ObservedAddr) ||
			!fromListenPort(id.Conn.LocalMultiaddr(), h.Network().ListenAddresses()) {
			return
		}
		n.seen.add(id.Peer, id.ObservedAddr, time.Now())
	})
	var err error
	n.punch, err = holepunch.NewService(h, idh.IDService(), n.punchAddrs, holepunch.WithTracer(punchLog{n.log, n}))
	if err != nil {
		return fmt.Errorf("starting hole punching: %w", err)
	}
	return nil
}

// ErrNoPublicAddr: nobody has told this node its public address yet (no
// member outside its NAT, such as a relay, is connected), so it cannot
// punch.
var ErrNoPublicAddr = errors.New("no public address known yet")

// Punch tries to replace the relayed connection to p by a direct one
// (DCUtR: both ends dial each other's public address at once, which
// opens a way through cone NATs). It returns nil once a direct
// connection exists, at once if one did already.
func (n *Node) Punch(ctx context.Context, p peer.ID) error {
	if n.ConnKind(p) != ConnRelayed {
		return nil
	}
	if n.punch == nil {
		return errors.New("this node does not punch holes")
	}
	if len(n.punchAddrs()) == 0 {
		return ErrNoPublicAddr
	}
	done := make(chan error, 1)
	go func() { done <- n.punch.DirectConnect(p) }()
	select {
	case err := <-done:
		if err == nil && !Direct(n.ConnKind(p)) {
			err = errors.New("no direct connection came of it")
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connSet remembers some connections of each peer connected now, by ID:
// those hole punching made (ConnKind says so), those a relay reservation
// was made on (Reserved).
type connSet struct {
	mu  sync.Mutex
	ids map[peer.ID]map[string]bool
}

func (pc *connSet) mark(p peer.ID, ids []string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.ids == nil {
		pc.ids = map[peer.ID]map[string]bool{}
	}
	if pc.ids[p] == nil {
		pc.ids[p] = map[string]bool{}
	}
	for _, id := range ids {
		pc.ids[p][id] = true
	}
}

func (pc *connSet) has(p peer.ID, id string) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.ids[p][id]
}

func (pc *connSet) forget(p peer.ID) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.ids, p)
}

// punchLog logs what hole punching does, and marks the connections it
// made.
type punchLog struct {
	log *slog.Logger
	n   *Node
}

func (l punchLog) Trace(e *holepunch.Event) {
	switch ev := e.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		if ev.Success {
			var ids []string
			for _, c := range l.n.host.Network().ConnsToPeer(e.Remote) {
				if !isRelayed(c.RemoteMultiaddr()) {
					ids = append(ids, c.ID())
				}
			}
			l.n.punched.mark(e.Remote, ids)
			l.log.Info("hole punched: direct connection", "peer", e.Remote, "took", time.Duration(ev.EllapsedTime))
		} else {
			l.log.Debug("hole punch attempt failed", "peer", e.Remote, "err", ev.Error)
		}
	case *holepunch.DirectDialEvt:
		if ev.Success {
			l.log.Info("reached directly instead of through the relay", "peer", e.Remote)
		}
	case *holepunch.ProtocolErrorEvt:
		l.log.Debug("hole punch refused", "peer", e.Remote, "err", ev.Error)
	}
}
