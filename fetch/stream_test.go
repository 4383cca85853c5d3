package fetch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// TestSyncUnpacksWhileFetching: a large path is unpacked as its chunks
// arrive, as Nix unpacks a NAR while downloading it, so that little is
// left to do when its last chunk comes. The seeder serves half of the
// path's chunks and holds the rest back until the follower's store shows
// the path's tree begun (its staging directory holds the data file); a
// sync that unpacked only complete paths would wait for ever. Then the
// sync completes with the path exactly as the seeder has it.
func TestSyncUnpacksWhileFetching(t *testing.T) {
	sk, kr := testKeys(t)
	gate := newGate(60) // of about 128 chunks
	a, paths := seeding(t, sk, 1, 8<<20, 61, func(s *store.Store) p2p.Content { gate.Store = s; return gate })
	c := newPeer(t, nil)
	connect(t, c, a)
	done := fetchInBackground(context.Background(), c, Options{Keys: kr}, paths[0].Path)
	select {
	case <-gate.reached:
	case r := <-done:
		t.Fatalf("sync ended before the gate: %+v %v", r.rep, r.err)
	}
	// The staging directory is store/.tmp-*; the path's file is lib/data.
	var staged int64
	waitUntil(t, 20*time.Second, "the path's tree begun while chunks are missing", func() bool {
		ents, _ := os.ReadDir(filepath.Join(c.home, "store"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				if fi, err := os.Stat(filepath.Join(c.home, "store", e.Name(), "lib", "data")); err == nil && fi.Size() > 0 {
					staged = fi.Size()
					return true
				}
			}
		}
		return false
	})
	t.Logf("with the seeder holding back the rest, %d bytes of the path's file were already unpacked", staged)
	close(gate.open)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	requireSameClosure(t, gate.Store, c.store, paths)
	requireNoSpool(t, c.home)
}
