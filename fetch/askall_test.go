package fetch

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

func TestAskAll(t *testing.T) {
	t.Run("bounded, and waits for every ask", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var now, most, done atomic.Int32
			err := AskAll(t.Context(), make([]int, 50), 4, func(ctx context.Context, _ int) error {
				n := now.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(time.Second)
				now.Add(-1)
				done.Add(1)
				return nil
			})
			if err != nil || most.Load() != 4 || done.Load() != 50 {
				t.Errorf("err %v, %d at once at most, %d done; want nil, 4, 50", err, most.Load(), done.Load())
			}
		})
	})
	t.Run("the first error stops the rest", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			found := errors.New("found")
			var started, cancelled atomic.Int32
			start := time.Now()
			err := AskAll(t.Context(), []int{0, 1, 2, 3, 4, 5, 6, 7}, 2, func(ctx context.Context, i int) error {
				started.Add(1)
				if i == 1 {
					return found
				}
				select {
				case <-ctx.Done():
					cancelled.Add(1)
				case <-time.After(time.Hour):
				}
				return nil
			})
			if !errors.Is(err, found) || started.Load() > 3 || cancelled.Load() != started.Load()-1 || time.Since(start) != 0 {
				t.Errorf("err %v, %d started, %d cancelled, took %v", err, started.Load(), cancelled.Load(), time.Since(start))
			}
		})
	})
}

// slowDHT answers every lookup and every dial after a second; each key
// is provided by a peer of its own and by a shared one, and dialling
// unreachable fails.
type slowDHT struct{ lookups, dials atomic.Int32 }

const unreachable = peer.ID("unreachable")

func (d *slowDHT) FindProviders(ctx context.Context, key cid.Cid, _ int) ([]peer.AddrInfo, error) {
	d.lookups.Add(1)
	time.Sleep(time.Second)
	return []peer.AddrInfo{{ID: peer.ID(key.String())}, {ID: "shared"}, {ID: unreachable}}, nil
}

func (d *slowDHT) Connect(ctx context.Context, p peer.AddrInfo) error {
	d.dials.Add(1)
	time.Sleep(time.Second)
	if p.ID == unreachable {
		return errors.New("no route")
	}
	return nil
}

// TestConnectProvidersAtOnce: the DHT lookups of a round run at once, and
// so do the dials to what they find, each provider dialled once.
func TestConnectProvidersAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d slowDHT
		keys := []nix.PathHash{{1}, {2}, {3}, {4}, {5}, {6}}
		start := time.Now()
		reached := connectProviders(t.Context(), &d, keys, p2p.PathKey)
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("6 lookups and 8 dials of a second each took %v, want 2s (the lookups at once, then the dials)", took)
		}
		if len(reached) != 7 || !slices.IsSorted(reached) || slices.Contains(reached, unreachable) || d.dials.Load() != 8 || d.lookups.Load() != 6 {
			t.Errorf("reached %v after %d lookups, %d dials; want the 7 reachable providers, sorted, each dialled once", reached, d.lookups.Load(), d.dials.Load())
		}
	})
}
