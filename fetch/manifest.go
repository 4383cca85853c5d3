package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// ResolveManifest asks every connected peer for generation gen (0 = newest)
// of name, keeps every manifest that verifies and is trusted, and returns
// the requested one (or the newest known, here or from any peer). When no
// connected peer has the configuration and the DHT is on, it connects to
// the peers the DHT says provide the name and asks them.
func ResolveManifest(ctx context.Context, n *p2p.Node, h *manifest.History, name string, gen uint64) (*manifest.Manifest, error) {
	refused := Learn(ctx, n, h, name, gen)
	m, _, err := h.Get(name, gen)
	if err != nil {
		if len(refused) > 0 {
			return nil, errors.Join(append([]error{err}, refused...)...)
		}
		return nil, fmt.Errorf("%w (asked %d connected %s)", err, len(n.ConnectedPeers()), plural(len(n.ConnectedPeers()), "peer", "peers"))
	}
	return m, nil
}

// Learn asks every connected peer for generation gen (0 = newest) of name
// and records in h every answer that verifies and is trusted; when none of
// them had it and the DHT is on, it asks the peers the DHT says provide the
// name. It returns why it refused the answers it did not record (a key not
// trusted for name, a bad signature, a different manifest of a known
// generation), each naming the peer.
func Learn(ctx context.Context, n *p2p.Node, h *manifest.History, name string, gen uint64) (refused []error) {
	refused = askManifest(ctx, n, h, n.ConnectedPeers(), name, gen)
	if _, _, err := h.Get(name, gen); err != nil {
		more := connectProviders(ctx, n, []string{name}, p2p.ConfigKey)
		refused = append(refused, askManifest(ctx, n, h, more, name, gen)...)
	}
	return refused
}

// askManifest asks peers for a manifest, a bounded number at once, and
// records what verifies; it returns what went wrong with the ones that
// did not.
func askManifest(ctx context.Context, n *p2p.Node, h *manifest.History, peers []peer.ID, name string, gen uint64) []error {
	var mu sync.Mutex
	var problems []error
	AskAll(ctx, peers, 0, func(ctx context.Context, p peer.ID) error {
		b, err := n.Manifest(ctx, p, name, gen)
		if err != nil {
			return nil // most peers do not follow every configuration
		}
		if _, _, err := h.AddAnswer(b, name, gen); err != nil {
			mu.Lock()
			problems = append(problems, fmt.Errorf("from %s: %w", p, err))
			mu.Unlock()
		}
		return nil
	})
	return problems
}

// FetchManifest fetches m's closure, believing exactly the PathInfos the
// manifest lists.
func (fe *Fetcher) FetchManifest(ctx context.Context, m *manifest.Manifest) (*Report, error) {
	opts := fe.opts
	opts.Vouched = m.Vouched()
	return New(fe.store, fe.node, opts).Fetch(ctx, []nix.Path{m.Root})
}
