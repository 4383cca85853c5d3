package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// peerSource is the binary-cache endpoint's nixcache.Source when it serves
// from peers (CacheConfig.FromPeers): it finds paths among a node's peers
// and fetches their closures with sync, which believes a PathInfo only
// through a key in the keyring (or a content address that recomputes) and
// verifies every chunk. It lives here, not in nixcache, so that the cache
// protocol knows nothing of peers.
type peerSource struct {
	store *store.Store
	node  *p2p.Node
	keys  *manifest.Keyring
	log   *slog.Logger
	// syncing admits one sync at a time: syncs of overlapping closures
	// would fetch the same paths twice into the same spool files.
	syncing chan struct{}
}

var _ nixcache.Source = (*peerSource)(nil)

// newPeerSource returns a Source over the peers of n, fetching into s and
// trusting the keys in keys.
func newPeerSource(s *store.Store, n *p2p.Node, keys *manifest.Keyring, log *slog.Logger) *peerSource {
	return &peerSource{store: s, node: n, keys: keys, log: log, syncing: make(chan struct{}, 1)}
}

// Find asks every connected peer whether it has h and learns the path's
// name from the first that does. It returns as soon as it knows: a path
// nobody connected has costs one round trip. It does not ask the DHT: the
// DHT knows only closure roots, so nearly every lookup there would miss,
// and each miss would cost Nix the whole timeout.
func (ps *peerSource) Find(ctx context.Context, h nix.PathHash) (nix.Path, error) {
	peers := ps.node.ConnectedPeers()
	var path nix.Path
	// The first peer that names the path ends the search: its error
	// stops the queries still out and those not sent yet.
	err := fetch.AskAll(ctx, peers, 0, func(ctx context.Context, p peer.ID) error {
		has, err := ps.node.Have(ctx, p, []nix.PathHash{h})
		if err != nil {
			ps.log.Debug("have query failed", "peer", p, "err", err)
			return nil
		}
		if !has[0] {
			return nil
		}
		if named, ok := ps.name(ctx, p, h); ok {
			path = named
			return errFound
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
		return path, nil
	case ctx.Err() != nil:
		return nix.Path{}, ctx.Err()
	}
	return nix.Path{}, fmt.Errorf("%w: %s: none of %d connected peers has it", nixcache.ErrNotFound, h, len(peers))
}

// errFound ends Find's questions once one peer has named the path.
var errFound = errors.New("found")

// name asks p for the info of h, for the path's name.
func (ps *peerSource) name(ctx context.Context, p peer.ID, h nix.PathHash) (nix.Path, bool) {
	ris, err := ps.node.Info(ctx, p, []nix.PathHash{h})
	if err != nil || ris[0] == nil {
		ps.log.Debug("peer has a path but no info for it", "peer", p, "hash", h, "err", err)
		return nix.Path{}, false
	}
	return ris[0].Info.Path, true
}

// Fetch syncs the closure of p from the connected peers. A closure that
// nothing trusted vouches for is nixcache.ErrNotFound: it cannot be served.
func (ps *peerSource) Fetch(ctx context.Context, p nix.Path) error {
	select {
	case ps.syncing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-ps.syncing }()
	if ok, err := ps.store.IsValid(p); err != nil || ok {
		return err // fetched meanwhile, for another request
	}
	_, err := fetch.New(ps.store, ps.node, fetch.Options{Keys: ps.keys, Logger: ps.log}).Fetch(ctx, []nix.Path{p})
	if errors.Is(err, trust.ErrUntrusted) {
		ps.log.Warn("a peer has a path that no trusted key vouches for; trust its publisher's key with `trove trust add NAME:KEY` to serve it",
			"path", p.Abs(ps.store.StoreDir()), "err", err)
		return fmt.Errorf("%w: %w", nixcache.ErrNotFound, err)
	}
	return err
}
