package store_test

import (
	"testing"

	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/store/storetest"
)

var _ storetest.ChunkStore = (*store.Store)(nil)

// TestConformance runs the suite every store implementation passes.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) storetest.Store { return openStore(t) })
}

// openNixStore opens a store on a fresh Nix store of its own (a chroot
// store under a temp dir, served by a private nix-daemon).
func openNixStore(t testing.TB) *store.Store {
	t.Helper()
	nixtest.Require(t)
	kind, err := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(t.TempDir(), store.Options{Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformanceNix runs the same suite against Nix's own store.
func TestConformanceNix(t *testing.T) {
	storetest.Run(t, func(t testing.TB) storetest.Store { return openNixStore(t) })
}
