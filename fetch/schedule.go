package fetch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// A peer is fetched from by one worker with its own stream, and by a
// second once a batch has come faster than fastStream: a muxed stream
// starts with a 256 KiB receive window that grows only on links slower
// than loopback, so on a fast link one stream leaves the peer idle part of
// the time, and two keep it busy (a 1 GiB sync over loopback: 2.05 s
// against 2.4 s). The streams share the peer's window of requests. On
// slower links a second stream would only ask one peer for more at once,
// which in a room of followers means more from the seeder and less from
// each other.
const (
	maxStreamsPerPeer = 2
	fastStream        = 200e6 // bytes per second
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
type transfer struct {
	fe    *Fetcher
	pl    *plan
	start time.Time

	mu      sync.Mutex
	cond    *sync.Cond
	pending []*want // not yet requested from anyone, in plan order
	left    int     // wants not done
	failed  error   // set once, by setFailed; errFinished after success
	failedC chan struct{}
	peers   map[peer.ID]*peerState
	items   map[nix.PathHash]*itemState
	// ready holds the items an ingest worker should take next: every chunk
	// is in, or the item is stale. Items are unpacked in the order they
	// complete, whatever their place in the graph, and committed once their
	// references are (referrers says whom to look at after a commit).
	ready     []readyItem
	referrers map[nix.PathHash][]*itemState
	// held is the NAR bytes of the items being unpacked or unpacked and
	// waiting for their references: each takes disk twice, as spool and
	// as tree, until it is committed. next keeps it within budget: the
	// largest NAR of the plan, plus half the space free beyond what the
	// sync needs (checkSpace), which bounds a sync's peak disk use.
	held, budget uint64

	bytesFetched, bytesReused, bytesResumed, bytesDone, bytesTotal int64
	pathsDone                                                      int

	// startWorker starts one more worker for a peer; called with mu held.
	startWorker func(peer.ID)
}

type itemState struct {
	it    *item
	spool *spool
	wants []*want // the chunks that had to be fetched
	left  int
	// isStale is set when the peer that described the item was dropped
	// and no other peer serves its chunks: its chunk index may be a lie
	// that only the liar can serve, so the item must be described again.
	isStale bool
	// staged is the unpacked, verified NAR waiting for its references to
	// become valid before it is committed.
	staged *store.Staged
	// epoch counts the item's descriptions (prepare starts a new one), and
	// busy says an ingest worker has taken it in this epoch: a ready entry
	// of another epoch, or of a taken item, is stale and skipped.
	epoch int
	busy  bool
	// held is the NAR size this item adds to fetch.held, 0 if none.
	held uint64
}

// readyItem is an entry of fetch.ready.
type readyItem struct {
	st    *itemState
	epoch int
}

type want struct {
	st       *itemState
	ref      chunk.Ref
	off      uint64
	done     bool
	old      bool // its item was restarted under another description
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
	lacks    map[nix.PathHash]bool
	streams  int // workers started
}

func newTransfer(fe *Fetcher, pl *plan, start time.Time) *transfer {
	f := &transfer{fe: fe, pl: pl, start: start, peers: map[peer.ID]*peerState{}, items: map[nix.PathHash]*itemState{},
		referrers: map[nix.PathHash][]*itemState{}, failedC: make(chan struct{})}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *transfer) peer(p peer.ID) *peerState {
	ps, ok := f.peers[p]
	if !ok {
		ps = &peerState{id: p, lacks: map[nix.PathHash]bool{}}
		f.peers[p] = ps
	}
	return ps
}

// errFinished stops the workers after every path is in.
var errFinished = errors.New("finished")

// fail stops the whole fetch with err (the first error wins).
func (f *transfer) fail(err error) {
	f.mu.Lock()
	f.setFailed(err)
	f.mu.Unlock()
}

// setFailed records the end of the fetch; called with mu held.
func (f *transfer) setFailed(err error) {
	if f.failed == nil {
		f.failed = err
		close(f.failedC)
	}
	f.cond.Broadcast()
}

func (f *transfer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, it := range f.pl.items {
		f.bytesTotal += int64(it.info.NarSize)
	}
	sweepSpools(f.fe.opts.SpoolDir, f.fe.store)
	if err := f.checkSpace(); err != nil {
		return err
	}
	// Prepare every item: resume from its spool, reuse local chunks. The
	// fetch order is the plan's (references first) rotated to start at a
	// random path: a room of machines syncing the same closure at once then
	// finishes different paths first and can serve them to each other,
	// instead of all waiting on the seeder for the same ones. Items are
	// unpacked as they complete, whatever the order, so this costs nothing.
	order := slices.Clone(f.pl.items)
	if n := len(order); n > 1 {
		k := rand.IntN(n)
		order = append(order[k:], order[:k]...)
	}
	for _, it := range order {
		st := &itemState{it: it}
		err := f.prepare(ctx, st)
		if st.spool != nil {
			f.items[it.info.Path.Hash] = st
		}
		if err != nil {
			f.closeSpools()
			return err
		}
	}
	for _, st := range f.items {
		f.addReferrer(st)
	}
	stopProgress := f.progressLoop()
	defer stopProgress()

	// Peer workers: every provider of anything.
	var workers sync.WaitGroup
	f.startWorker = func(p peer.ID) {
		f.peer(p).streams++
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
				f.startWorker(p)
			}
		}
	}
	f.checkProviders()
	f.mu.Unlock()
	workers.Add(1)
	go func() {
		defer workers.Done()
		f.relocate(ctx)
	}()

	stopWatch := context.AfterFunc(ctx, func() { f.fail(ctx.Err()) })
	defer stopWatch()

	// A few ingest workers unpack items as they complete and commit them
	// references first.
	g, gctx := errgroup.WithContext(ctx)
	for range f.fe.opts.Ingest {
		g.Go(func() error {
			err := f.ingestLoop(gctx)
			if err != nil {
				f.fail(err)
			}
			return err
		})
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
	for _, st := range f.items {
		if st.staged != nil { // never committed: a reference failed
			st.staged.Discard()
			st.staged = nil
		}
	}
	f.mu.Unlock()
	cancel()
	workers.Wait()
	stopProgress()
	f.closeSpools()
	if errors.Is(err, errFinished) {
		return nil
	}
	return err
}

// closeSpools lets go of the spools of the items not committed, once
// nothing writes to them any more: they stay on disk for the next sync to
// resume from, and for trove gc to remove if none does.
func (f *transfer) closeSpools() {
	for _, st := range f.items {
		if st.spool != nil && !st.it.valid {
			st.spool.close()
		}
	}
}

// prepare opens the spool of st's item and decides which chunks must be
// fetched, (re)setting st in place.
func (f *transfer) prepare(ctx context.Context, st *itemState) error {
	f.mu.Lock()
	it := st.it
	path, size, index, offs := it.info.Path, it.info.NarSize, it.index, it.offs
	f.mu.Unlock()
	sp, fresh, err := openSpool(f.fe.opts.SpoolDir, path, size)
	if err != nil {
		return err
	}
	// Look at the spool and the store without the lock: workers of other
	// paths keep going meanwhile (this also runs when a path restarts).
	var resumed, reused int64
	var missing []int
	buf := make([]byte, chunk.MaxSize)
	for i, c := range index {
		if !fresh && sp.has(c, offs[i], buf) {
			resumed += int64(c.Size)
			continue
		}
		if data, err := f.fe.store.ReadChunk(ctx, c.ID, c.Size); err == nil {
			if err := sp.writeAt(data, offs[i]); err != nil {
				sp.close()
				return fmt.Errorf("writing %s: %w", sp.f.Name(), err)
			}
			reused += int64(c.Size)
			continue
		}
		missing = append(missing, i)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	*st = itemState{it: it, spool: sp, epoch: st.epoch + 1}
	f.bytesResumed += resumed
	f.bytesReused += reused
	f.bytesDone += resumed + reused
	for _, i := range missing {
		w := &want{st: st, ref: index[i], off: offs[i], inflight: map[peer.ID]bool{}}
		st.wants = append(st.wants, w)
		st.left++
		f.left++
		f.pending = append(f.pending, w)
	}
	if st.left == 0 {
		f.push(st)
	}
	f.cond.Broadcast()
	return nil
}

// push queues st for an ingest worker. Called with mu held.
func (f *transfer) push(st *itemState) {
	f.ready = append(f.ready, readyItem{st, st.epoch})
	f.cond.Broadcast()
}

// canServe says whether p may be asked for w.
func (f *transfer) canServe(ps *peerState, w *want) bool {
	return ps.dropped == "" && !ps.lacks[w.st.it.info.Path.Hash] && slices.Contains(w.st.it.providers, ps.id)
}

// take hands p up to n chunks to request, blocking while there is nothing
// for it now but may be later; nil means p is done.
func (f *transfer) take(p peer.ID, n int) []*want {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		// A peer stays until the end even when nothing is left to fetch:
		// an item whose NAR proves its chunk index a lie is fetched again.
		ps := f.peers[p]
		if f.failed != nil || ps.dropped != "" {
			return nil
		}
		// Share what is left among the peers still working, so one peer
		// does not take a whole small remainder while others idle.
		if live := f.livePeers(); live > 1 {
			n = max(4, min(n, len(f.pending)/live))
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
func (f *transfer) endgame(ps *peerState, n int) []*want {
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

func (f *transfer) worker(ctx context.Context, p peer.ID) {
	f.fe.node.Protect(p, "trove-sync")
	defer f.fe.node.Unprotect(p, "trove-sync")
	for {
		batch := f.take(p, batchSize)
		if batch == nil {
			return
		}
		began := time.Now()
		err := f.fetchBatch(ctx, p, batch)
		f.release(p, batch)
		if err == nil {
			f.widen(p, batch, time.Since(began))
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

// widen gives p a second stream if batch came fast.
func (f *transfer) widen(p peer.ID, batch []*want, d time.Duration) {
	var bytes int64
	for _, w := range batch {
		bytes += int64(w.ref.Size)
	}
	if bytes < 1<<20 || float64(bytes)/d.Seconds() < fastStream {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ps := f.peers[p]; ps.streams < maxStreamsPerPeer && ps.dropped == "" && f.failed == nil {
		f.startWorker(p)
	}
}

// fetchBatch requests batch from p, delivering each verified chunk.
func (f *transfer) fetchBatch(ctx context.Context, p peer.ID, batch []*want) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(f.fe.opts.StallTimeout, func() { cancel(errStalled) })
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
	window := max(1, f.fe.opts.Window/ps.streams)
	f.mu.Unlock()
	err := f.fe.node.Fetch(ctx, p, wants, window, func(i int, data []byte, err error) error {
		watchdog.Reset(f.fe.opts.StallTimeout)
		w := batch[i]
		if err != nil { // the peer does not have it after all (lied in have)
			f.mu.Lock()
			if !w.old { // not a chunk of a description since replaced
				f.peers[p].lacks[w.st.it.info.Path.Hash] = true
			}
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
func (f *transfer) deliver(p peer.ID, w *want, data []byte) error {
	f.mu.Lock()
	if w.done {
		f.mu.Unlock()
		return nil
	}
	w.done = true
	sp := w.st.spool
	f.mu.Unlock()
	err := sp.writeAt(data, w.off)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if w.old && errors.Is(err, os.ErrClosed) {
			return nil // its item was restarted and the old spool removed
		}
		f.setFailed(fmt.Errorf("fetching %s: %w", w.st.it.info.Path.Abs(f.fe.store.StoreDir()), err))
		return err
	}
	ps := f.peers[p]
	ps.bytes += int64(len(data))
	ps.last = time.Now()
	f.bytesFetched += int64(len(data))
	f.left--
	if w.old {
		return nil
	}
	f.bytesDone += int64(len(data))
	w.st.left--
	if w.st.left == 0 {
		f.push(w.st)
	}
	f.cond.Broadcast()
	return nil
}

// release takes p off the wants of a finished batch; those nobody else is
// fetching go back to the front of the queue.
func (f *transfer) release(p peer.ID, batch []*want) {
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
func (f *transfer) drop(ps *peerState, why string) {
	if ps.dropped != "" {
		return
	}
	ps.dropped = why
	f.fe.log.Warn("dropping peer for this sync", "peer", ps.id, "reason", why)
	f.checkProviders()
	f.cond.Broadcast()
}

// checkProviders fails the fetch if some chunk has nobody left to serve it.
// Called with mu held.
func (f *transfer) checkProviders() {
	if f.failed != nil {
		return
	}
	for _, st := range f.items {
		if st.left == 0 || st.isStale {
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
			if f.redescribable(st) {
				st.isStale = true
				f.push(st)
				continue
			}
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
				st.it.info.Path.Abs(f.fe.store.StoreDir()), why, humanBytes(f.bytesDone), humanBytes(f.bytesTotal)))
			return
		}
	}
}

// redescribable says whether an item nobody can serve any more should be
// described again: the peer that described it was dropped, so its chunk
// index may be one that only that peer can serve, and another provider is
// still there to ask. Called with mu held.
func (f *transfer) redescribable(st *itemState) bool {
	if ps := f.peers[st.it.infoFrom]; ps == nil || ps.dropped == "" {
		return false
	}
	return len(f.others(st.it)) > 0
}

// others are the providers of it other than its describer that are not
// dropped. Called with mu held.
func (f *transfer) others(it *item) []peer.ID {
	var out []peer.ID
	for _, p := range it.providers {
		if ps := f.peers[p]; p != it.infoFrom && (ps == nil || ps.dropped == "") {
			out = append(out, p)
		}
	}
	return out
}

// ingestLoop takes ready items until every item is valid or the fetch
// failed.
func (f *transfer) ingestLoop(ctx context.Context) error {
	for {
		f.mu.Lock()
		var st *itemState
		for {
			if f.failed != nil {
				err := f.failed
				f.mu.Unlock()
				if errors.Is(err, errFinished) {
					return nil
				}
				return err
			}
			if st = f.next(); st != nil {
				break
			}
			if len(f.ready) == 0 && f.pathsDone == len(f.pl.items) { // every item is valid
				f.mu.Unlock()
				return nil
			}
			f.cond.Wait()
		}
		st.busy = true
		f.mu.Unlock()
		if err := f.ingest(ctx, st); err != nil {
			return err
		}
	}
}

// next takes the ready item to unpack now, or nil if none may start yet.
// Called with mu held.
//
// An item whose references are valid is unpacked and committed at once;
// one whose references are not is unpacked ahead and waits for them.
// Either way its NAR is on disk twice (spool and tree) until its commit,
// and the bytes so held stay within f.budget: an item starts only when it
// fits, or when nothing is held. Items that can be committed go first, and
// to make room for one, items unpacked ahead are discarded (their spools
// stay, so they are only unpacked again later); no item is unpacked ahead
// while one that could be committed waits, so the sync always moves on.
func (f *transfer) next() *itemState {
	live := f.ready[:0]
	for _, e := range f.ready {
		if e.epoch == e.st.epoch && !e.st.busy {
			live = append(live, e)
		}
	}
	clear(f.ready[len(live):])
	f.ready = live
	pick := slices.IndexFunc(f.ready, func(e readyItem) bool { return e.st.isStale || f.refsValid(e.st.it) })
	switch {
	case pick >= 0 && f.ready[pick].st.isStale:
		// Described again without unpacking: holds nothing.
	case pick >= 0:
		if size := f.ready[pick].st.it.info.NarSize; !f.fits(size) {
			f.evict(size)
			if !f.fits(size) {
				return nil // wait for the items being unpacked
			}
		}
	default:
		pick = slices.IndexFunc(f.ready, func(e readyItem) bool { return f.fits(e.st.it.info.NarSize) })
		if pick < 0 {
			return nil
		}
	}
	st := f.ready[pick].st
	f.ready = slices.Delete(f.ready, pick, pick+1)
	if !st.isStale {
		st.held = st.it.info.NarSize
		f.held += st.held
	}
	return st
}

// fits says whether a NAR of size bytes may be held twice now. Called
// with mu held.
func (f *transfer) fits(size uint64) bool { return f.held == 0 || f.held+size <= f.budget }

// evict discards items unpacked ahead until size fits, or none is left.
// Called with mu held.
func (f *transfer) evict(size uint64) {
	for _, st := range f.items {
		if f.fits(size) {
			return
		}
		if st.staged != nil {
			st.staged.Discard()
			st.staged = nil
			st.busy = false
			f.unhold(st)
			f.push(st)
		}
	}
}

// unhold takes st's NAR off the bytes held twice. Called with mu held.
func (f *transfer) unhold(st *itemState) {
	if st.held > 0 {
		f.held -= st.held
		st.held = 0
		f.cond.Broadcast()
	}
}

// ingest unpacks an item whose chunks are all in and commits it (or hands
// it to whoever commits its last reference). A NAR that does not hash to
// the believed narHash means the peer that described it (its chunk index)
// lied: it is dropped and the item is fetched again by another peer's
// description; so is a stale item, whose describer was dropped while its
// chunks are still missing.
func (f *transfer) ingest(ctx context.Context, st *itemState) error {
	f.mu.Lock()
	it, stale, sp := st.it, st.isStale, st.spool
	info := *it.info
	f.mu.Unlock()
	if stale {
		f.mu.Lock()
		from, why, others := it.infoFrom, f.peer(it.infoFrom).dropped, f.others(it)
		f.abandon(st) // its last chunks must not make it look complete meanwhile
		f.mu.Unlock()
		fresh, berr := f.fe.believe(ctx, it.info.Path, others)
		if berr != nil {
			return fmt.Errorf("peer %s, which described %s, was dropped (%s), and no other peer gives a usable description: %w",
				from, it.info.Path.Abs(f.fe.store.StoreDir()), why, berr)
		}
		return f.restart(ctx, st, fresh)
	}
	x, err := f.fe.store.StageNAR(ctx, &info, it.index, sp.reader())
	if err == nil {
		return f.commit(st, x)
	}
	if !errors.Is(err, nix.ErrHashMismatch) && !errors.Is(err, nix.ErrBadNAR) || it.attempts >= 2 {
		return err
	}
	it.attempts++
	// The chunks matched the index, so the index (or the info) lied.
	f.mu.Lock()
	liar := f.peer(it.infoFrom)
	liar.bad++
	why := "described " + it.info.Path.String() + " with a chunk index that does not produce its NAR"
	f.drop(liar, why)
	others := f.others(it)
	f.mu.Unlock()
	fresh, berr := f.fe.believe(ctx, it.info.Path, others)
	if berr != nil {
		return fmt.Errorf("peer %s %s (%w); and no other peer gives a usable description: %v", liar.id, why, err, berr)
	}
	return f.restart(ctx, st, fresh)
}

// commit makes st's staged NAR valid if its references are, then every
// staged referrer whose references have all become valid, and so on; a
// staged item whose references are not all valid waits for the commit of
// the last of them.
func (f *transfer) commit(st *itemState, x *store.Staged) error {
	type job struct {
		st *itemState
		x  *store.Staged
	}
	var next []job
	f.mu.Lock()
	if f.refsValid(st.it) {
		next = append(next, job{st, x})
	} else {
		st.staged = x
	}
	f.mu.Unlock()
	for len(next) > 0 {
		j := next[0]
		next = next[1:]
		if _, err := j.x.Commit(); err != nil {
			j.x.Discard()
			for _, o := range next {
				o.x.Discard()
			}
			return err
		}
		j.st.spool.remove()
		f.mu.Lock()
		f.unhold(j.st)
		j.st.it.valid = true
		f.pathsDone++
		for _, r := range f.referrers[j.st.it.info.Path.Hash] {
			if r.staged != nil && f.refsValid(r.it) {
				next = append(next, job{r, r.staged})
				r.staged = nil
			}
		}
		f.cond.Broadcast()
		f.mu.Unlock()
	}
	return nil
}

// refsValid says whether every reference of it in the plan is valid.
// Called with mu held.
func (f *transfer) refsValid(it *item) bool {
	for _, ref := range it.info.References {
		if dep, ok := f.pl.byHash[ref.Hash]; ok && dep != it && !dep.valid {
			return false
		}
	}
	return true
}

// addReferrer records st as a referrer of its references in the plan.
// Called with mu held, or before the workers start.
func (f *transfer) addReferrer(st *itemState) {
	for _, ref := range st.it.info.References {
		if dep, ok := f.pl.byHash[ref.Hash]; ok && dep != st.it && !slices.Contains(f.referrers[ref.Hash], st) {
			f.referrers[ref.Hash] = append(f.referrers[ref.Hash], st)
		}
	}
}

// restart refetches an item under a new description. The chunks of the
// old one still wanted are abandoned, and what peers lacked of it is
// forgotten: they lacked chunks of the old index.
func (f *transfer) restart(ctx context.Context, st *itemState, fresh *item) error {
	f.mu.Lock()
	f.abandon(st)
	it := st.it
	for _, ps := range f.peers {
		delete(ps.lacks, it.info.Path.Hash)
	}
	it.info, it.index, it.offs, it.infoFrom, it.providers = fresh.info, fresh.index, fresh.offs, fresh.infoFrom, fresh.providers
	f.addReferrer(st)
	old := st.spool
	f.mu.Unlock()
	old.remove()
	return f.prepare(ctx, st)
}

// abandon gives up the chunks of st's current description still wanted.
// Called with mu held.
func (f *transfer) abandon(st *itemState) {
	f.unhold(st)
	for _, w := range st.wants {
		if !w.done {
			w.done = true
			f.left--
		}
		w.old = true
	}
}

func (f *transfer) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// livePeers counts peers not dropped; called with mu held.
func (f *transfer) livePeers() int {
	n := 0
	for _, ps := range f.peers {
		if ps.dropped == "" {
			n++
		}
	}
	return n
}

// relocateEvery is how often a running fetch asks connected peers again
// which unfinished paths they have.
var relocateEvery = 500 * time.Millisecond

// relocate keeps re-asking connected peers for the paths still being
// fetched and adds those that have them (another follower that just
// finished a path, a peer that connected late) as providers with workers
// of their own. This is what lets a room of followers serve each other
// instead of all pulling from the one seeder.
func (f *transfer) relocate(ctx context.Context) {
	t := time.NewTicker(relocateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.failedC:
			return
		case <-t.C:
		}
		f.mu.Lock()
		var open []*item
		for _, it := range f.pl.items {
			if st := f.items[it.info.Path.Hash]; st != nil && st.left > 0 {
				open = append(open, it)
			}
		}
		f.mu.Unlock()
		if len(open) == 0 {
			continue
		}
		hashes := make([]nix.PathHash, len(open))
		for i, it := range open {
			hashes[i] = it.info.Path.Hash
		}
		found := f.fe.locateConnected(ctx, hashes)
		f.mu.Lock()
		for i, it := range open {
			for _, p := range found[i] {
				if slices.Contains(it.providers, p) {
					continue
				}
				it.providers = append(it.providers, p)
				if _, ok := f.peers[p]; !ok {
					f.startWorker(p)
				}
			}
		}
		f.cond.Broadcast()
		f.mu.Unlock()
	}
}

// checkSpace fails with a NoSpaceError unless the rest of the sync fits:
// the missing paths' NARs, less what their spools hold already, plus the
// largest of them, which may be held twice. It sets the budget of bytes
// held twice to that largest NAR plus half the space free beyond the need
// (see space.go).
func (f *transfer) checkSpace() error {
	if len(f.pl.items) == 0 {
		return nil
	}
	largest := f.largest()
	var need uint64
	for _, it := range f.pl.items {
		need += it.info.NarSize - spoolHolds(f.fe.opts.SpoolDir, it.info.Path, it.info.NarSize)
	}
	trees := filepath.Dir(f.fe.store.TreePath(f.pl.items[0].info.Path))
	spare, err := checkSpace(need+largest, f.fe.store.Home(), trees, f.fe.opts.SpoolDir)
	if err != nil {
		return err
	}
	f.budget = largest + min(spare/2, math.MaxUint64/2)
	return nil
}

// largest is the largest NAR of the plan (which does not change).
func (f *transfer) largest() uint64 {
	var n uint64
	for _, it := range f.pl.items {
		n = max(n, it.info.NarSize)
	}
	return n
}

// noSpace turns a sync that failed for want of disk into a NoSpaceError
// that says how much more the rest of it needs, and where.
func (f *transfer) noSpace(err error) error {
	var ns *NoSpaceError
	if err == nil || errors.As(err, &ns) || !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	f.mu.Lock()
	left := uint64(max(0, f.bytesTotal-f.bytesDone))
	f.mu.Unlock()
	need := left + f.largest()
	free, _, _ := freeSpace(f.fe.store.Home())
	return &NoSpaceError{Dir: f.fe.store.Home(), Need: need, Free: free, Err: err}
}
