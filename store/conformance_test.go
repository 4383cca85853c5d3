package store_test

import (
	"testing"

	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/store/storetest"
)

var _ storetest.ChunkStore = (*store.Store)(nil)

// TestConformance runs the suite every store implementation passes.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) storetest.Store { return openStore(t) })
}
