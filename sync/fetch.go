package sync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	gosync "sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// batchSize is how many chunk requests one stream carries. A new stream
// per batch lets the scheduler re-rank peers and hand work to new ones;
// with a window of pipelined requests inside, the cost is one round trip
// per batch.
const batchSize = 64

// fetch is one run of the chunk scheduler over a plan. Work is pulled, not
// pushed: each peer's worker takes the next chunks it can serve whenever
// its pipeline has room, so a faster peer simply takes more. When nothing
// is left to hand out, idle peers duplicate chunks still in flight
// elsewhere (endgame), and the first copy to arrive wins.
type fetch struct {
	sy    *Syncer
	pl    *plan
	start time.Time

	mu      gosync.Mutex
	cond    *gosync.Cond
	pending []*want // not yet requested from anyone, in plan order
	left    int     // wants not done
	failed  error   // set once, by setFailed; errFinished after success
	failedC chan struct{}
	peers   map[peer.ID]*peerState
	items   map[store.PathHash]*itemState

	bytesFetched, bytesReused, bytesResumed, bytesDone, bytesTotal int64
	pathsDone                                                      int
}

type itemState struct {
	it       *item
	spool    *spool
	wants    []*want // the chunks that had to be fetched
	left     int
	complete chan struct{} // closed when every chunk is in the spool
}

type want struct {
	st       *itemState
	ref      store.ChunkRef
	off      uint64
	done     bool
	inflight map[peer.ID]bool
}

type peerState struct {
	id       peer.ID
	bytes    int64
	first    time.Time
	last     time.Time
	bad      int
	dropped  string
	failures int
	lacks    map[store.PathHash]bool
}

func newFetch(sy *Syncer, pl *plan, start time.Time) *fetch {
	f := &fetch{sy: sy, pl: pl, start: start, peers: map[peer.ID]*peerState{}, items: map[store.PathHash]*itemState{}, failedC: make(chan struct{})}
	f.cond = gosync.NewCond(&f.mu)
	return f
}

func (f *fetch) peer(p peer.ID) *peerState {
	ps, ok := f.peers[p]
	if !ok {
		ps = &peerState{id: p, lacks: map[store.PathHash]bool{}}
		f.peers[p] = ps
	}
	return ps
}

// errFinished stops the workers after every path is in.
var errFinished = errors.New("finished")

// fail stops the whole fetch with err (the first error wins).
func (f *fetch) fail(err error) {
	f.mu.Lock()
	f.setFailed(err)
	f.mu.Unlock()
}

// setFailed records the end of the fetch; called with mu held.
func (f *fetch) setFailed(err error) {
	if f.failed == nil {
		f.failed = err
		close(f.failedC)
	}
	f.cond.Broadcast()
}

func (f *fetch) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, it := range f.pl.items {
		f.bytesTotal += int64(it.info.NarSize)
	}
	// Prepare every item: resume from its spool, reuse local chunks.
	for _, it := range f.pl.items {
		st, err := f.prepare(ctx, it)
		if err != nil {
			return err
		}
		f.items[it.info.Path.Hash] = st
	}
	stopProgress := f.progressLoop()
	defer stopProgress()

	// Peer workers: every provider of anything.
	var workers gosync.WaitGroup
	startWorker := func(p peer.ID) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			f.worker(ctx, p)
		}()
	}
	f.mu.Lock()
	for _, it := range f.pl.items {
		for _, p := range it.providers {
			if _, ok := f.peers[p]; !ok {
				f.peer(p)
				startWorker(p)
			}
		}
	}
	f.checkProviders()
	f.mu.Unlock()

	// Ingest in plan order (references first), a few at a time; each waits
	// for its references to be valid.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.sy.opts.Ingest)
	for _, it := range f.pl.items {
		g.Go(func() error { return f.ingest(gctx, it) })
	}
	err := g.Wait()
	f.mu.Lock()
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = errFinished
	}
	f.setFailed(err)
	err = f.failed
	f.mu.Unlock()
	cancel()
	workers.Wait()
	stopProgress()
	if errors.Is(err, errFinished) {
		return nil
	}
	return err
}

// prepare opens an item's spool and decides which chunks must be fetched.
func (f *fetch) prepare(ctx context.Context, it *item) (*itemState, error) {
	sp, err := openSpool(f.sy.opts.SpoolDir, it.info.Path, it.info.NarSize)
	if err != nil {
		return nil, err
	}
	st := &itemState{it: it, spool: sp, complete: make(chan struct{})}
	buf := make([]byte, store.ChunkMax)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range it.index {
		off := it.offs[i]
		if sp.has(c, off, buf) {
			f.bytesResumed += int64(c.Size)
			f.bytesDone += int64(c.Size)
			continue
		}
		if data, err := f.sy.store.ReadChunk(ctx, c.ID, c.Size); err == nil {
			if err := sp.writeAt(data, off); err != nil {
				return nil, err
			}
			f.bytesReused += int64(c.Size)
			f.bytesDone += int64(c.Size)
			continue
		}
		w := &want{st: st, ref: c, off: off, inflight: map[peer.ID]bool{}}
		st.wants = append(st.wants, w)
		st.left++
		f.left++
		f.pending = append(f.pending, w)
	}
	if st.left == 0 {
		close(st.complete)
	}
	return st, nil
}

// canServe says whether p may be asked for w.
func (f *fetch) canServe(ps *peerState, w *want) bool {
	return ps.dropped == "" && !ps.lacks[w.st.it.info.Path.Hash] && slices.Contains(w.st.it.providers, ps.id)
}

// take hands p up to n chunks to request, blocking while there is nothing
// for it now but may be later; nil means p is done.
func (f *fetch) take(p peer.ID, n int) []*want {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		ps := f.peers[p]
		if f.failed != nil || f.left == 0 || ps.dropped != "" {
			return nil
		}
		var batch []*want
		rest := f.pending[:0]
		for _, w := range f.pending {
			if len(batch) < n && !w.done && f.canServe(ps, w) {
				w.inflight[p] = true
				batch = append(batch, w)
				continue
			}
			if !w.done {
				rest = append(rest, w)
			}
		}
		clear(f.pending[len(rest):])
		f.pending = rest
		if len(batch) > 0 {
			return batch
		}
		if len(f.pending) == 0 {
			// Endgame: duplicate what others are still fetching.
			batch = f.endgame(ps, n)
			if len(batch) > 0 {
				return batch
			}
		}
		f.cond.Wait()
	}
}

// endgame picks chunks in flight on other peers that p could also serve.
// Called with mu held.
func (f *fetch) endgame(ps *peerState, n int) []*want {
	var batch []*want
	for _, it := range f.pl.items {
		st := f.items[it.info.Path.Hash]
		if st.left == 0 {
			continue
		}
		for _, w := range st.wants {
			if len(batch) >= n {
				return batch
			}
			if !w.done && len(w.inflight) > 0 && !w.inflight[ps.id] && f.canServe(ps, w) {
				w.inflight[ps.id] = true
				batch = append(batch, w)
			}
		}
	}
	return batch
}

func (f *fetch) worker(ctx context.Context, p peer.ID) {
	f.sy.node.Protect(p, "trove-sync")
	defer f.sy.node.Unprotect(p, "trove-sync")
	for {
		batch := f.take(p, batchSize)
		if batch == nil {
			return
		}
		err := f.fetchBatch(ctx, p, batch)
		f.release(p, batch)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var bad *p2p.BadDataError
		f.mu.Lock()
		ps := f.peers[p]
		switch {
		case errors.As(err, &bad):
			ps.bad++
			f.drop(ps, "sent bad data: "+bad.Detail)
		case errors.Is(err, errStalled):
			f.drop(ps, "stalled")
		default:
			ps.failures++
			if ps.failures >= 3 {
				f.drop(ps, err.Error())
			}
		}
		dropped := ps.dropped != ""
		f.mu.Unlock()
		if dropped {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(200*ps.failures) * time.Millisecond):
		}
	}
}

var errStalled = errors.New("peer stalled")

// fetchBatch requests batch from p, delivering each verified chunk.
func (f *fetch) fetchBatch(ctx context.Context, p peer.ID, batch []*want) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(f.sy.opts.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	wants := make([]p2p.ChunkWant, len(batch))
	for i, w := range batch {
		wants[i] = p2p.ChunkWant{Chunk: w.ref.ID, Size: w.ref.Size}
	}
	f.mu.Lock()
	ps := f.peers[p]
	if ps.first.IsZero() {
		ps.first = time.Now()
	}
	f.mu.Unlock()
	err := f.sy.node.Fetch(ctx, p, wants, f.sy.opts.Window, func(i int, data []byte, err error) error {
		watchdog.Reset(f.sy.opts.StallTimeout)
		w := batch[i]
		if err != nil { // the peer does not have it after all (lied in have)
			f.mu.Lock()
			f.peers[p].lacks[w.st.it.info.Path.Hash] = true
			f.mu.Unlock()
			return nil
		}
		return f.deliver(p, w, data)
	})
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return errStalled
	}
	return err
}

// deliver writes a verified chunk into its spool, unless another peer's
// copy got there first.
func (f *fetch) deliver(p peer.ID, w *want, data []byte) error {
	f.mu.Lock()
	if w.done {
		f.mu.Unlock()
		return nil
	}
	w.done = true
	f.mu.Unlock()
	if err := w.st.spool.writeAt(data, w.off); err != nil {
		f.fail(fmt.Errorf("writing %s: %w", w.st.spool.path, err))
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.peers[p]
	ps.bytes += int64(len(data))
	ps.last = time.Now()
	f.bytesFetched += int64(len(data))
	f.bytesDone += int64(len(data))
	f.left--
	w.st.left--
	if w.st.left == 0 {
		close(w.st.complete)
	}
	f.cond.Broadcast()
	return nil
}

// release takes p off the wants of a finished batch; those nobody else is
// fetching go back to the front of the queue.
func (f *fetch) release(p peer.ID, batch []*want) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var back []*want
	for _, w := range batch {
		delete(w.inflight, p)
		if !w.done && len(w.inflight) == 0 {
			back = append(back, w)
		}
	}
	if len(back) > 0 {
		f.pending = append(back, f.pending...)
		f.checkProviders()
	}
	f.cond.Broadcast()
}

// drop removes a peer from this sync. Called with mu held.
func (f *fetch) drop(ps *peerState, why string) {
	if ps.dropped != "" {
		return
	}
	ps.dropped = why
	f.sy.log.Warn("dropping peer for this sync", "peer", ps.id, "reason", why)
	f.checkProviders()
	f.cond.Broadcast()
}

// checkProviders fails the fetch if some chunk has nobody left to serve it.
// Called with mu held.
func (f *fetch) checkProviders() {
	if f.failed != nil {
		return
	}
	for _, st := range f.items {
		if st.left == 0 {
			continue
		}
		alive := false
		for _, p := range st.it.providers {
			if ps := f.peers[p]; ps != nil && ps.dropped == "" && !ps.lacks[st.it.info.Path.Hash] {
				alive = true
				break
			}
		}
		if !alive {
			var why []string
			for _, p := range st.it.providers {
				if ps := f.peers[p]; ps != nil {
					r := ps.dropped
					if r == "" && ps.lacks[st.it.info.Path.Hash] {
						r = "does not have it after all"
					}
					why = append(why, fmt.Sprintf("%s: %s", p, r))
				}
			}
			f.setFailed(fmt.Errorf("no peer left to fetch %s from (%v); %s of %s are kept, so running the sync again when a peer that has it is back resumes",
				st.it.info.Path.Abs(f.sy.store.StoreDir()), why, humanBytes(f.bytesDone), humanBytes(f.bytesTotal)))
			return
		}
	}
}

// ingest waits for an item's chunks and references, then unpacks and
// registers it. A NAR that does not hash to the believed narHash means the
// peer that described it (its chunk index) lied: it is dropped and the
// item is fetched again by another peer's description.
func (f *fetch) ingest(ctx context.Context, it *item) error {
	st := f.items[it.info.Path.Hash]
	for attempt := 0; ; attempt++ {
		select {
		case <-st.complete:
		case <-ctx.Done():
			return ctx.Err()
		case <-f.failedC:
			return f.failure()
		}
		for _, ref := range it.info.References {
			if dep, ok := f.pl.byHash[ref.Hash]; ok && dep != it {
				select {
				case <-dep.done:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		info := *it.info
		_, err := f.sy.store.AddNAR(ctx, &info, st.spool.reader())
		if err == nil {
			st.spool.remove()
			close(it.done)
			f.mu.Lock()
			f.pathsDone++
			f.mu.Unlock()
			return nil
		}
		if !errors.Is(err, store.ErrHashMismatch) && !errors.Is(err, store.ErrBadNAR) || attempt >= 2 {
			return err
		}
		// The chunks matched the index, so the index (or the info) lied.
		f.mu.Lock()
		liar := f.peer(it.infoFrom)
		liar.bad++
		f.drop(liar, "described "+it.info.Path.String()+" with a chunk index that does not produce its NAR")
		f.mu.Unlock()
		var others []peer.ID
		for _, p := range it.providers {
			if p != it.infoFrom {
				others = append(others, p)
			}
		}
		fresh, berr := f.sy.believe(ctx, it.info.Path, others)
		if berr != nil {
			return fmt.Errorf("%w; and no other peer gives a usable description: %v", err, berr)
		}
		if err := f.restart(ctx, st, fresh); err != nil {
			return err
		}
	}
}

// restart refetches an item under a new description.
func (f *fetch) restart(ctx context.Context, st *itemState, fresh *item) error {
	st.spool.remove()
	it := st.it
	it.info, it.index, it.offs, it.infoFrom, it.providers = fresh.info, fresh.index, fresh.offs, fresh.infoFrom, fresh.providers
	nst, err := f.prepare(ctx, it)
	if err != nil {
		return err
	}
	f.mu.Lock()
	*st = *nst
	for _, w := range st.wants {
		w.st = st
	}
	if st.left == 0 {
		select {
		case <-st.complete:
		default:
			close(st.complete)
		}
	}
	f.cond.Broadcast()
	f.mu.Unlock()
	return nil
}

func (f *fetch) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}
