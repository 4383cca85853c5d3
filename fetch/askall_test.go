package fetch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
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
