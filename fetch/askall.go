package fetch

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// askLimit is how many peers (or DHT lookups) AskAll keeps in flight when
// the caller sets no limit: enough that a room of peers answers in about
// one round trip, few enough that a long peer list or closure does not
// open a stream per entry at once.
const askLimit = 16

// AskAll calls ask for each of xs (peers to query, keys to look up), at
// most limit at once (limit <= 0: 16), and waits for every call it
// started. The first error an ask returns cancels the context the others
// get, stops the ones not started yet, and is what AskAll returns; an ask
// that only wants to record a failure returns nil. ask guards what it
// shares with the others.
func AskAll[T any](ctx context.Context, xs []T, limit int, ask func(ctx context.Context, x T) error) error {
	if limit <= 0 {
		limit = askLimit
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, x := range xs {
		if gctx.Err() != nil {
			break // an ask failed, or ctx ended: start no more
		}
		g.Go(func() error { return ask(gctx, x) })
	}
	return g.Wait()
}
