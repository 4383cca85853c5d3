package p2p

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// A machine the user owns and that others can reach (a home server, a
// small VPS) can relay for its trust group: members behind NATs make a
// reservation on it and reach each other through it, and hole punching
// (DCUtR, enabled on every node) then tries to replace the relayed
// connection by a direct one. The relay serves its group only: it takes
// reservations from members and connects a member to a member, nobody
// else. It sets no per-circuit limit of its own beyond libp2p's resource
// accounting (the owner offers it to the group, for bulk too), so a
// relayed connection is an ordinary one to its ends.

// relayACL lets only members of the trust group reserve on the relay and
// be connected through it, both ends (a reservation outlives a removal
// for up to its TTL, so a connect is checked again).
type relayACL struct{ trust *TrustGroup }

func (a relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return a.trust.Contains(p) }

func (a relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dst peer.ID) bool {
	return a.trust.Contains(src) && a.trust.Contains(dst)
}

var _ relayv2.ACLFilter = relayACL{}

// startRelay makes n a relay for its trust group.
func (n *Node) startRelay(trust *TrustGroup) error {
	r, err := relayv2.New(n.host, relayv2.WithACL(relayACL{trust}), relayv2.WithInfiniteLimits())
	if err != nil {
		return fmt.Errorf("starting the relay service: %w", err)
	}
	n.relay = r
	return nil
}

// Reserve makes a reservation on the relay ai (a member running
// --relay-service), so that members can reach this node through it at
// RelayAddr.
func (n *Node) Reserve(ctx context.Context, ai peer.AddrInfo) error {
	if err := n.host.Connect(ctx, ai); err != nil {
		return fmt.Errorf("connecting to relay %s: %w", ai.ID, err)
	}
	if _, err := client.Reserve(ctx, n.host, ai); err != nil {
		return fmt.Errorf("reserving on relay %s: %w", ai.ID, err)
	}
	var ids []string
	for _, c := range n.host.Network().ConnsToPeer(ai.ID) {
		ids = append(ids, c.ID())
	}
	n.reserved.forget(ai.ID)
	n.reserved.mark(ai.ID, ids)
	return nil
}

// Reserved says whether a connection a reservation on relay was made on
// (Reserve) is still open. The relay forgets a reservation with the
// connection it was made on, so once that closes it must be made again,
// even when this node is connected to the relay anew by then (reaching a
// member through it, say).
func (n *Node) Reserved(relay peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(relay) {
		if n.reserved.has(relay, c.ID()) {
			return true
		}
	}
	return false
}

// RelayAddr is how a member reaches target through the relay at ai.
func RelayAddr(relay peer.AddrInfo, target peer.ID) (peer.AddrInfo, error) {
	out := peer.AddrInfo{ID: target}
	for _, a := range relay.Addrs {
		c, err := ma.NewMultiaddr(fmt.Sprintf("%s/p2p/%s/p2p-circuit", a, relay.ID))
		if err != nil {
			return out, err
		}
		out.Addrs = append(out.Addrs, c)
	}
	return out, nil
}

// isRelayed says whether a goes through a relay.
func isRelayed(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// How a node is connected to a peer (ConnKind).
const (
	ConnDirect  = "direct"       // dialled (or accepted) without a relay
	ConnPunched = "hole-punched" // direct, made by hole punching through NATs
	ConnRelayed = "relayed"      // only through a relay
)

// ConnKind says how this node is connected to p: ConnDirect,
// ConnPunched, ConnRelayed, or "" when it is not.
func (n *Node) ConnKind(p peer.ID) string {
	kind := ""
	for _, c := range n.host.Network().ConnsToPeer(p) {
		switch {
		case isRelayed(c.RemoteMultiaddr()):
			if kind == "" {
				kind = ConnRelayed
			}
		case n.punched.has(p, c.ID()):
			kind = ConnPunched
		default:
			return ConnDirect
		}
	}
	return kind
}

// Direct says whether kind (of ConnKind) is a connection not through a
// relay.
func Direct(kind string) bool { return kind == ConnDirect || kind == ConnPunched }

// Disconnections signals (coalesced, on a channel of one) each time this
// node loses its last connection to a member, until ctx ends: a relayed
// member or the relay itself may need to be reached again.
func (n *Node) Disconnections(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	n.onEvent(ctx, new(event.EvtPeerConnectednessChanged), func(e any) {
		c := e.(event.EvtPeerConnectednessChanged)
		if c.Connectedness == network.NotConnected && n.gater.trust.Contains(c.Peer) {
			select {
			case out <- struct{}{}:
			default:
			}
		}
	})
	return out
}

// onEvent calls fn with each event of evtType (a pointer to the event
// type, as EventBus.Subscribe takes) until ctx or the node ends. A bus
// that is closed (the node stopping) delivers nothing.
func (n *Node) onEvent(ctx context.Context, evtType any, fn func(e any)) {
	sub, err := n.host.EventBus().Subscribe(evtType)
	if err != nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				fn(e)
			}
		}
	}()
}
