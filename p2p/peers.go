package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// PeerStatus describes one connected or known peer, for `trove peers`.
type PeerStatus struct {
	ID        string   `json:"id"`
	Name      string   `json:"name,omitempty"`
	Addrs     []string `json:"addrs"`
	Transport string   `json:"transport,omitempty"` // of the first live connection
	Connected bool     `json:"connected"`
	// Via is "direct", "hole-punched" (direct, made through NATs by hole
	// punching), or "relayed" when the only connection goes through a
	// relay (ConnKind).
	Via      string        `json:"via,omitempty"`
	Latency  time.Duration `json:"latencyNs"`
	BytesIn  int64         `json:"bytesIn"`  // all protocols (libp2p's meter: updated every second)
	BytesOut int64         `json:"bytesOut"` // all protocols
	// ChunkBytesIn and ChunkBytesOut count store data fetched from and
	// served to the peer, exactly and at once.
	ChunkBytesIn  int64 `json:"chunkBytesIn"`
	ChunkBytesOut int64 `json:"chunkBytesOut"`
	Trusted       bool  `json:"trusted"`
}

// Peers lists the connected peers and the trust group's members.
func (n *Node) Peers() []PeerStatus {
	ids := map[peer.ID]bool{}
	for _, p := range n.host.Network().Peers() {
		ids[p] = true
	}
	for p := range n.gater.trust.Peers() {
		ids[p] = true
	}
	var out []PeerStatus
	for p := range ids {
		st := PeerStatus{
			ID: p.String(), Name: n.gater.trust.Name(p), Trusted: n.gater.trust.Contains(p),
			Connected: n.host.Network().Connectedness(p) == network.Connected,
			Latency:   n.host.Peerstore().LatencyEWMA(p),
			Via:       n.ConnKind(p),
		}
		for _, c := range n.host.Network().ConnsToPeer(p) {
			if st.Transport == "" {
				st.Transport = c.ConnState().Transport
			}
			st.Addrs = append(st.Addrs, c.RemoteMultiaddr().String())
		}
		if len(st.Addrs) == 0 {
			for _, a := range n.host.Peerstore().Addrs(p) {
				st.Addrs = append(st.Addrs, a.String())
			}
		}
		bw := n.bw.GetBandwidthForPeer(p)
		st.BytesIn, st.BytesOut = bw.TotalIn, bw.TotalOut
		st.ChunkBytesIn, st.ChunkBytesOut = n.chunkBytes(p)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		if a.Connected != b.Connected {
			if a.Connected {
				return -1
			}
			return 1
		}
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}

// ConnectedPeers returns the peers with a live connection.
func (n *Node) ConnectedPeers() []peer.ID { return n.host.Network().Peers() }

// chunkCounter counts store data moved per peer.
type chunkCounter struct {
	mu      sync.Mutex
	in, out map[peer.ID]int64
}

func (n *Node) countChunk(p peer.ID, in bool, bytes int) {
	c := &n.chunks
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.in == nil {
		c.in, c.out = map[peer.ID]int64{}, map[peer.ID]int64{}
	}
	if in {
		c.in[p] += int64(bytes)
	} else {
		c.out[p] += int64(bytes)
	}
}

func (n *Node) chunkBytes(p peer.ID) (in, out int64) {
	n.chunks.mu.Lock()
	defer n.chunks.mu.Unlock()
	return n.chunks.in[p], n.chunks.out[p]
}

// ReachMember returns nil as soon as some member of the trust group
// answers a ping, dialling members it is not connected to; else, when ctx
// ends, why not. A group of this node alone has nobody to reach: nil.
// A connection that looks open proves nothing (a machine whose network
// went away keeps its TCP connections for minutes), so every answer is a
// fresh round trip.
func (n *Node) ReachMember(ctx context.Context) error {
	for {
		var members []peer.ID
		for p := range n.gater.trust.Peers() {
			if p != n.ID() {
				members = append(members, p)
			}
		}
		if len(members) == 0 {
			return nil
		}
		answered := make(chan struct{}, len(members))
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		for _, p := range members {
			go func() {
				if n.host.Network().Connectedness(p) != network.Connected {
					if err := n.host.Connect(rctx, peer.AddrInfo{ID: p}); err != nil {
						return
					}
				}
				if r, ok := <-ping.Ping(rctx, n.host, p); ok && r.Error == nil {
					answered <- struct{}{}
				}
			}()
		}
		select {
		case <-answered:
			cancel()
			return nil
		case <-rctx.Done():
			cancel()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no member of the trust group answers (%d tried)", len(members))
		}
	}
}
