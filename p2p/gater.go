package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater refuses inbound connections from peers outside the trust group once
// their identity is known (after the security handshake, before any stream),
// unless the agent serves publicly. Outbound connections are the agent's own
// choice: it may fetch from anyone, since every byte it fetches is verified;
// what it serves is still guarded per stream by the same rule.
type gater struct {
	trust  *TrustGroup
	public bool
	joins  *joiners // nil: no stranger is admitted to join (group.go)
	// dialBacks admits the strangers AutoNAT servers dial back from
	// (reach.go).
	dialBacks *dialBacks
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func (g *gater) allowed(p peer.ID) bool { return g.public || g.trust.Contains(p) }

func (g *gater) InterceptPeerDial(peer.ID) bool               { return true }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool  { return true }

func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	return dir == network.DirOutbound || g.allowed(p) || g.joins.admit(p) || g.dialBacks.admit(p, addrs.RemoteMultiaddr())
}

func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	g.watchJoiner(c)
	g.watchDialBack(c)
	return true, 0
}

// admittedStranger says whether p is a stranger let in to join or to dial
// back: it hears no gossip.
func (g *gater) admittedStranger(p peer.ID) bool {
	return g.joins.stranger(p) || g.dialBacks.stranger(p)
}

// watchDialBack closes an admitted dial-back stranger's connection once
// its window has passed.
func (g *gater) watchDialBack(c network.Conn) {
	p := c.RemotePeer()
	if c.Stat().Direction != network.DirInbound || g.allowed(p) || g.joins.stranger(p) || !g.dialBacks.stranger(p) {
		return
	}
	time.AfterFunc(dialBackWindow, func() {
		if !g.allowed(p) {
			c.Close()
		}
	})
}
