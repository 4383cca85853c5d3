package fetch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// TestNewProviderJoinsMidFetch: a sync that starts with one slow seeder
// takes chunks from a peer that gets the closure while the fetch runs,
// as followers in a room serve each other.
func TestNewProviderJoinsMidFetch(t *testing.T) {
	defer func(d time.Duration) { relocateEvery = d }(relocateEvery)
	relocateEvery = 50 * time.Millisecond
	sk, kr := testKeys(t)
	fetching := make(chan struct{}) // closed at the first chunk asked of the slow seeder
	var once sync.Once
	slow := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content {
		return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
			once.Do(func() { close(fetching) })
			time.Sleep(20 * time.Millisecond) // slow, not synchronisation
			return s.ReadChunk(ctx, id, size)
		}}
	}})
	late, c := newPeer(t, nil), newPeer(t, nil)
	paths := closure(t, slow.store, sk, 6, 700<<10, 21)
	connect(t, c, slow, late)
	root := paths[len(paths)-1].Path

	go func() {
		<-fetching
		closure(t, late.store, sk, 6, 700<<10, 21) // the same paths appear on the other peer
	}()
	rep, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatal(err)
	}
	requireSameClosure(t, slow.store, c.store, paths)
	for _, p := range rep.Peers {
		if p.ID == late.node.ID().String() && p.BytesFetched > 0 {
			return
		}
	}
	t.Fatalf("the peer that got the closure mid-fetch served nothing: %+v", rep.Peers)
}
