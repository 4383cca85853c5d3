package p2p

import (
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
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func (g *gater) allowed(p peer.ID) bool { return g.public || g.trust.Contains(p) }

func (g *gater) InterceptPeerDial(peer.ID) bool               { return true }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool  { return true }

func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return dir == network.DirOutbound || g.allowed(p) || g.joins.admit(p)
}

func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	g.watchJoiner(c)
	return true, 0
}
