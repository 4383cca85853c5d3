package p2p

import (
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

// rankDials orders the addresses a dial tries as libp2p's default does
// (QUIC first, TCP a little after), except on the LAN: to a private or
// loopback address TCP goes first, and QUIC only if TCP has not connected
// within lanQUICDelay. On a LAN the round trips QUIC saves are nothing,
// while its per-packet work in user space is most of the cost of moving
// bytes: a room of 16 followers on 100 Mbit/s links, CPU-bound on two
// cores, finished in 38 s over TCP against 51 s over QUIC (DESIGN.md,
// Transports). Across the internet QUIC keeps its place: it connects in
// fewer round trips and punches through NATs more often.
func rankDials(addrs []ma.Multiaddr) []network.AddrDelay {
	ranked := swarm.DefaultDialRanker(addrs)
	if !slices.ContainsFunc(addrs, func(a ma.Multiaddr) bool { return onLAN(a) && isTCP(a) }) {
		return ranked
	}
	for i := range ranked {
		a := ranked[i].Addr
		switch {
		case !onLAN(a):
		case isTCP(a):
			ranked[i].Delay = 0
		default:
			ranked[i].Delay += lanQUICDelay
		}
	}
	slices.SortStableFunc(ranked, func(x, y network.AddrDelay) int { return int(x.Delay - y.Delay) })
	return ranked
}

// onLAN says whether a is a private or loopback address (not a relay).
func onLAN(a ma.Multiaddr) bool {
	if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return false
	}
	return manet.IsPrivateAddr(a) || manet.IsIPLoopback(a)
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
