package p2p

import (
	"context"
	"errors"
	"fmt"

	"github.com/trove-p2p/trove/nix"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// ErrNoDHT is returned by DHT calls on a node started without the DHT.
var ErrNoDHT = errors.New("the DHT is off; start the agent with --dht")

// An agent announces on the DHT only what people ask for by name: closure
// roots and configuration names, never individual chunks or paths inside a
// closure (that would be one provider record per chunk, which the DHT
// cannot afford; peers found through a root answer `have` for the rest).

// PathKey is the DHT key of a closure root.
func PathKey(h nix.PathHash) cid.Cid { return dhtKey("trove/path/" + h.String()) }

// ConfigKey is the DHT key of a configuration name.
func ConfigKey(name string) cid.Cid { return dhtKey("trove/config/" + name) }

func dhtKey(s string) cid.Cid {
	m, _ := mh.Sum([]byte(s), mh.SHA2_256, -1) // cannot fail for sha2-256
	return cid.NewCidV1(cid.Raw, m)
}

// Provide announces on the DHT that this node has key.
func (n *Node) Provide(ctx context.Context, key cid.Cid) error {
	if n.dht == nil {
		return ErrNoDHT
	}
	if err := n.dht.Provide(ctx, key, true); err != nil {
		return fmt.Errorf("announcing %s on the DHT: %w", key, err)
	}
	return nil
}

// FindProviders asks the DHT for up to max nodes that provide key.
func (n *Node) FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error) {
	if n.dht == nil {
		return nil, ErrNoDHT
	}
	var out []peer.AddrInfo
	for ai := range n.dht.FindProvidersAsync(ctx, key, max) {
		if ai.ID != n.host.ID() {
			out = append(out, ai)
		}
	}
	if len(out) == 0 {
		return nil, ctx.Err()
	}
	return out, nil
}

// BootstrapDHT refreshes the routing table from connected peers.
func (n *Node) BootstrapDHT(ctx context.Context) error {
	if n.dht == nil {
		return ErrNoDHT
	}
	return n.dht.Bootstrap(ctx)
}
