package p2p

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// lanQUICDelay is how long a dial to a peer on the LAN waits for TCP
// before it tries QUIC too.
const lanQUICDelay = time.Second

// publicQUICWait is how long a dial to a peer with a private TCP address
// holds back QUIC to its global IPv6 addresses: on a dual-stack LAN those
// are on the same link, and a QUIC dial to one started with the TCP one
// would connect as fast and stay open beside it. Once TCP's socket
// connects, libp2p holds new dials while it upgrades; if the private
// addresses lead nowhere (the peer is on another network with the same
// private range), this is what a dial over IPv6 loses. Public IPv4
// addresses are not on the link (a LAN reaches them through NAT), and a
// peer's loopback addresses, which every agent shares, say nothing of
// where it is: neither holds QUIC back.
const publicQUICWait = 250 * time.Millisecond

// rankDials orders the addresses a dial tries as libp2p's default does
// (QUIC first, TCP a little after), except when the peer has a TCP
// address on the LAN (private or loopback): then that goes first, QUIC on
// the LAN only if TCP has not connected within lanQUICDelay, and, for a
// peer with a private TCP address, QUIC to global IPv6 after
// publicQUICWait. On a LAN the round trips QUIC saves are
// nothing, while its per-packet work in user space is most of the cost of
// moving bytes: a room of 16 followers on 100 Mbit/s links, CPU-bound on
// two cores, finished in 38 s over TCP against 51 s over QUIC (DESIGN.md,
// Wire protocols). Across the internet QUIC keeps its place: it connects
// in fewer round trips and punches through NATs more often.
func rankDials(addrs []ma.Multiaddr) []network.AddrDelay {
	ranked := swarm.DefaultDialRanker(addrs)
	first := time.Duration(-1) // the LAN TCP address libp2p would dial first
	private := false
	for _, r := range ranked {
		if onLAN(r.Addr) && isTCP(r.Addr) && (first < 0 || r.Delay < first) {
			first = r.Delay
		}
		private = private || isTCP(r.Addr) && manet.IsPrivateAddr(r.Addr) && !manet.IsIPLoopback(r.Addr)
	}
	if first < 0 {
		return ranked
	}
	for i := range ranked {
		a := ranked[i].Addr
		switch {
		case onLAN(a) && isTCP(a):
			ranked[i].Delay -= first // libp2p's stagger between them kept
		case !isQUIC(a):
		case onLAN(a):
			ranked[i].Delay += lanQUICDelay
		case private && isIP6(a):
			ranked[i].Delay = max(ranked[i].Delay, publicQUICWait)
		}
	}
	slices.SortStableFunc(ranked, func(x, y network.AddrDelay) int { return cmp.Compare(x.Delay, y.Delay) })
	return ranked
}

// onLAN says whether a is a private or loopback address (not a relay).
func onLAN(a ma.Multiaddr) bool {
	if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return false
	}
	return manet.IsPrivateAddr(a) || manet.IsIPLoopback(a)
}

// isIP6 says whether a is an IPv6 address.
func isIP6(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_IP6)
	return err == nil
}

// isQUIC says whether a is a QUIC address.
func isQUIC(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_QUIC_V1)
	return err == nil
}

// isTCP says whether a is a plain TCP address (not a websocket).
func isTCP(a ma.Multiaddr) bool {
	if _, err := a.ValueForProtocol(ma.P_TCP); err != nil {
		return false
	}
	_, errWS := a.ValueForProtocol(ma.P_WS)
	_, errWSS := a.ValueForProtocol(ma.P_WSS)
	return errWS != nil && errWSS != nil
}
