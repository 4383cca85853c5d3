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
	return openNixAt(t, t.TempDir())
}

// TestConformanceNix runs the same suite against Nix's own store.
func TestConformanceNix(t *testing.T) {
	storetest.Run(t, func(t testing.TB) storetest.Store { return openNixStore(t) })
}
