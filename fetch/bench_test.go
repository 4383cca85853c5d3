package fetch

import (
	"context"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

// BenchmarkSyncLoopback syncs a 16-path, 128 MiB signed closure between
// two in-process nodes on loopback TCP.
func BenchmarkSyncLoopback(b *testing.B) {
	sk, kr := testKeys(b)
	a := newPeer(b, nil)
	paths := closure(b, a.store, sk, 16, 8<<20, 9)
	root := paths[len(paths)-1].Path
	b.SetBytes(int64(16 * (8 << 20)))
	for b.Loop() {
		b.StopTimer()
		c := newPeer(b, nil)
		connect(b, c, a)
		b.StartTimer()
		if _, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root}); err != nil {
			b.Fatal(err)
		}
	}
}
