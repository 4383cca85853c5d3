package fetch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
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

// chunkPeers is what a transfer's workers need of the network.
type chunkPeers interface {
	// FetchMore requests wants from p with up to window in flight and
	// calls got with each verified chunk, or with an error for a chunk p
	// lacks; once the last chunk asked so far is half in, it asks more
	// (if not nil) for what to ask next on the same stream.
	FetchMore(ctx context.Context, p peer.ID, wants []p2p.ChunkWant, window int, more func() []p2p.ChunkWant, got func(i int, data []byte, err error) error) error
	Protect(p peer.ID, tag string)
	Unprotect(p peer.ID, tag string)
	// Compressed says how many bytes compressed answers from p took on
	// the wire and how many chunk bytes they carried.
	Compressed(p peer.ID) (wire, raw int64)
}

var _ chunkPeers = (*p2p.Node)(nil)

// swarmPeers is what a transfer needs of the network to swarm: serve
// what its spools hold, say what it gains, and hear what peers hold.
type swarmPeers interface {
	AddPartial(src p2p.Partial) (remove func())
	Gained(h nix.PathHash)
	GainedChunk(h nix.PathHash, i int, holders []peer.ID)
	SubscribeHaves(ctx context.Context, p peer.ID, paths []nix.PathHash, got func(*p2p.Haves) error) error
	ConnectedPeers() []peer.ID
}

var _ swarmPeers = (*p2p.Node)(nil)

// stager is what a transfer's ingest stage needs of the store.
type stager interface {
	ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error)
	StageNAR(ctx context.Context, info *nix.PathInfo, index chunk.Index, r io.Reader) (staged, error)
}

// storeStager is the store as a stager.
type storeStager struct{ *store.Store }

func (s storeStager) StageNAR(ctx context.Context, info *nix.PathInfo, index chunk.Index, r io.Reader) (staged, error) {
	x, err := s.Store.StageNAR(ctx, info, index, r)
	if err != nil {
		return nil, err
	}
	return x, nil
}

// transfer is one run of the scheduler over a plan, with the I/O around
// it: a worker per peer stream pulls chunks (take), verifies and writes
// them into spools (deliver); ingest workers unpack complete items and
// commit them references first (ingest.go); relocate keeps finding new
// providers. Work is pulled, not pushed: a faster peer simply takes more.
type transfer struct {
	pl    *plan
	start time.Time
	opts  Options
	log   *slog.Logger
	net   chunkPeers
	store stager
	// locate asks connected peers which of hashes they have; believe gets
	// a path's description from one of providers and checks it.
	locate  func(ctx context.Context, hashes []nix.PathHash) [][]peer.ID
	believe func(ctx context.Context, p nix.Path, providers []peer.ID) (*item, error)
	// haves, when set, makes the transfer swarm (partial.go): it serves
	// what its spools hold (hold), pushes what it gains to subscribed
	// peers, and subscribes to what connected peers hold of the paths it
	// fetches now and next (following.paths); ask asks the peers that do
	// not speak haves which paths they have.
	haves swarmPeers
	ask   func(ctx context.Context, peers []peer.ID, hashes []nix.PathHash) [][]peer.ID
	hold  *holdings

	// mu guards sched, which is reached only through lock; unlock (and
	// wait) publish what it decided: a failure closes ended, and every
	// waiter is woken. The ingest workers and stream readers wait on
	// cond, and each peer's workers on their own condition in asks, so
	// that what one peer says it gained wakes only the workers that may
	// ask it, and a chunk arriving only those that unpack: in a room of
	// 16 every unlock woke some twenty goroutines to scan the pending
	// chunks again, most often for nothing.
	mu    sync.Mutex
	cond  *sync.Cond
	asks  map[peer.ID]*sync.Cond
	sched *scheduler
	ended chan struct{} // closed once sched.err is set
	// pointed wakes relocate to follow a peer a Later answer named.
	pointed chan struct{}
	spawn   func(peer.ID) // starts one more worker for a peer the scheduler counted
}

func newTransfer(fe *Fetcher, pl *plan, start time.Time) *transfer {
	f := &transfer{pl: pl, start: start, opts: fe.opts, log: fe.log, net: fe.node, store: storeStager{fe.store},
		locate: fe.locateConnected, believe: fe.believe, haves: fe.node, ask: fe.ask}
	f.init(fe.store.StoreDir())
	f.sched.inOrder = !fe.store.StagesAhead()
	return f
}

// init sets up the state every transfer starts from.
func (f *transfer) init(storeDir string) {
	f.cond = sync.NewCond(&f.mu)
	f.asks = map[peer.ID]*sync.Cond{}
	f.sched = newScheduler(f.pl, storeDir, f.opts.Window)
	f.sched.streamOK = f.opts.Ingest >= 2
	f.ended = make(chan struct{})
	f.pointed = make(chan struct{}, 1)
	f.hold = newHoldings()
}

// lock takes f.mu and returns the scheduler, which must not be used after
// unlock or wait.
func (f *transfer) lock() *scheduler {
	f.mu.Lock()
	return f.sched
}

// unlock publishes what the scheduler decided, wakes every waiter and
// lets go of f.mu.
func (f *transfer) unlock() {
	f.publish()
	f.cond.Broadcast()
	for _, c := range f.asks {
		c.Broadcast()
	}
	f.mu.Unlock()
}

// unlockAsking lets go of f.mu after a change only p's workers can act
// on (p said it holds more), waking only them, or every peer's workers
// for p "" (there is more anyone may ask for); unlockUnpacking after a
// change the ingest workers and stream readers can act on (a chunk is
// in), waking them, and every peer's workers too if asking (the chunk
// raised how many requests may be out). A failure still wakes everyone.
func (f *transfer) unlockAsking(p peer.ID) {
	if f.sched.err != nil {
		f.unlock()
		return
	}
	for q, c := range f.asks {
		if p == "" || q == p {
			c.Broadcast()
		}
	}
	f.mu.Unlock()
}

func (f *transfer) unlockUnpacking(asking bool) {
	if asking {
		f.cond.Broadcast()
		f.unlockAsking("")
		return
	}
	if f.sched.err != nil {
		f.unlock()
		return
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// unlockTaken lets go of f.mu after chunks were handed to a worker,
// had saying whether any were pending before. Taking work away gives the
// others nothing, unless it took the last pending chunks: what is in
// flight is then theirs to ask for too (endgame).
func (f *transfer) unlockTaken(had bool) {
	if had && f.sched.pending == 0 {
		f.unlockAsking("")
		return
	}
	f.unlockQuiet()
}

// unlockQuiet lets go of f.mu without waking the waiters, after a call
// that only took work away (claim, began) or only read, and so gave no
// waiter anything to act on.
func (f *transfer) unlockQuiet() { f.mu.Unlock() }

// wait publishes a failure and waits for a change; it does not wake the
// other waiters, so that waiting is not itself a change. waitAsking is
// wait for a worker of p.
func (f *transfer) wait() {
	f.publish()
	f.cond.Wait()
}

func (f *transfer) waitAsking(p peer.ID) {
	f.publish()
	c := f.asks[p]
	if c == nil {
		c = sync.NewCond(&f.mu)
		f.asks[p] = c
	}
	c.Wait()
}

func (f *transfer) publish() {
	if f.sched.err == nil {
		return
	}
	select {
	case <-f.ended:
	default:
		close(f.ended)
	}
}

// fail stops the whole transfer with err (the first error wins).
func (f *transfer) fail(err error) {
	f.lock().fail(err)
	f.unlock()
}

// run prepares every item and drives the transfer to its end.
func (f *transfer) run(ctx context.Context, fe *Fetcher) error {
	sweepSpools(f.opts.SpoolDir, fe.store)
	if err := f.checkSpace(fe); err != nil {
		return err
	}
	// Prepare every item: resume from its spool, reuse local chunks.
	if err := f.prepareAll(ctx, fetchOrder(f.pl.items, f.sched.inOrder, rand.IntN)); err != nil {
		return err
	}
	return f.drive(ctx)
}

// fetchOrder is the order in which items are fetched. It is the plan's
// (references first) rotated to start at a random path (intn picks it): a
// room of machines syncing the same closure at once then finishes
// different paths first and can serve them to each other, instead of all
// waiting on the seeder for the same ones. A store that stages ahead
// unpacks items as they complete, whatever the order, so rotating costs
// it nothing. A store that adds a path only once its references are valid
// (inOrder: Nix's) gets the plan's order as it is: rotated, the paths
// before the start would come last, and every path above them would wait
// for the end of the transfer to be added, turning a pipeline into fetch
// then add.
func fetchOrder(items []*item, inOrder bool, intn func(int) int) []*item {
	order := slices.Clone(items)
	if n := len(order); n > 1 && !inOrder {
		k := intn(n)
		order = append(order[k:], order[:k]...)
	}
	return order
}

// drive runs the workers, the ingest stage and relocation until every item
// is valid or the transfer fails.
func (f *transfer) drive(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopProgress := f.progressLoop()
	defer stopProgress()

	var workers sync.WaitGroup
	f.spawn = func(p peer.ID) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			f.worker(ctx, p)
		}()
	}
	unserve := func() {}
	if f.haves != nil {
		unserve = f.haves.AddPartial(f.hold)
	}
	defer unserve()
	start := f.lock().meetProviders()
	f.unlock()
	for _, p := range start {
		f.spawn(p)
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		f.relocate(ctx, &workers)
	}()

	stopWatch := context.AfterFunc(ctx, func() { f.fail(ctx.Err()) })
	defer stopWatch()

	// A few ingest workers unpack items as they complete and commit them
	// references first.
	g, gctx := errgroup.WithContext(ctx)
	for range f.opts.Ingest {
		g.Go(func() error {
			err := f.ingestLoop(gctx)
			if err != nil {
				f.fail(err)
			}
			return err
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = errFinished
	}
	s := f.lock()
	discard := s.finish(err)
	err = s.err
	f.unlock()
	for _, x := range discard {
		x.Discard()
	}
	cancel()
	workers.Wait()
	stopProgress()
	unserve() // before the spools close
	unserve = func() {}
	f.closeSpools()
	if errors.Is(err, errFinished) {
		return nil
	}
	return err
}

// take hands p up to n chunks to request, blocking while there is nothing
// for it now but may be later; nil means p is done.
func (f *transfer) take(p peer.ID, n int) []*want {
	s := f.lock()
	for {
		had := s.pending > 0
		batch, stop := s.take(p, n, time.Now())
		if stop {
			f.unlock()
			return nil
		}
		if len(batch) > 0 {
			f.unlockTaken(had)
			return batch
		}
		if testHookWait != nil {
			testHookWait(p)
		}
		f.waitAsking(p)
	}
}

// testHookWait, when set, is called (holding f.mu) each time a worker
// of p finds nothing to take and waits.
var testHookWait func(p peer.ID)

// worker fetches batches from p until the scheduler has nothing more for
// it, p is dropped, or the transfer ends.
func (f *transfer) worker(ctx context.Context, p peer.ID) {
	f.net.Protect(p, "trove-sync")
	defer f.net.Unprotect(p, "trove-sync")
	for {
		batch := f.take(p, batchSize)
		if batch == nil {
			return
		}
		began := time.Now()
		batch, extended, busy, err := f.fetchBatch(ctx, p, batch)
		took := time.Since(began)
		s := f.lock()
		s.release(p, batch, extended)
		var (
			more, out  bool
			droppedNow string
			backoff    time.Duration
		)
		switch {
		case err == nil && busy > 0:
		case err == nil:
			var bytes int64
			for _, w := range batch {
				bytes += int64(w.ref.Size)
			}
			more = s.widen(p, bytes, took)
		case ctx.Err() == nil:
			out, droppedNow, backoff = s.batchFailed(p, err)
		}
		f.unlock()
		if droppedNow != "" {
			f.log.Warn("dropping peer for this sync", "peer", p, "reason", droppedNow)
		}
		if more {
			f.spawn(p)
		}
		if err == nil && busy > 0 {
			// p serves as many peers as it will at once: ask it again
			// once it may have a slot (what it was asked goes to others
			// meanwhile).
			err, backoff = errBusy, busy
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil || out {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// fetchBatch requests batch from p, delivering each verified chunk, and
// in a swarm extends it (scheduler.extend) as its last chunk arrives:
// asked is the batch in the end, extended how many times it grew. A
// peer that sends nothing for the stall timeout is cut off (errStalled).
// busy says p answered that it serves as many peers as it will at once,
// and how long to leave it be.
func (f *transfer) fetchBatch(ctx context.Context, p peer.ID, batch []*want) (asked []*want, extended int, busy time.Duration, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(f.opts.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	// A transfer that hears what its peers gain may be told to get a chunk
	// from the peer that got it (p2p/upload.go), from its first batch
	// on: in a room, the first batches all go to the seeder before anyone
	// has heard from anyone.
	wants := make([]p2p.ChunkWant, len(batch))
	s := f.lock()
	// Read under the lock: p's workers read its counters in order.
	wire, raw := f.net.Compressed(p)
	window := s.began(p, time.Now())
	was, judged := s.peers.get(p).zstd, s.noShrink
	zstd := s.compress(p, f.opts.Compress, wire, raw)
	switch {
	case !judged && s.noShrink:
		f.log.Debug("compressed chunks do not shrink: asking no peer for them", "wire", s.zstdGot[0], "raw", s.zstdGot[1])
	case zstd != was && !s.noShrink:
		rate, _ := s.peers.get(p).rate(1)
		f.log.Debug("compression for this peer", "peer", p, "on", zstd, "rate MB/s", int(rate/1e6))
	}
	ask := func(s *scheduler, w *want) p2p.ChunkWant {
		return p2p.ChunkWant{Chunk: w.ref.ID, Size: w.ref.Size, Defer: f.haves != nil && s.mayDefer(p, w), Zstd: zstd}
	}
	for i, w := range batch {
		wants[i] = ask(s, w)
	}
	var more func() []p2p.ChunkWant // nil outside a swarm: extend hands nothing
	if s.swarm {
		more = func() []p2p.ChunkWant {
			s := f.lock()
			had := s.pending > 0
			next := s.extend(p, len(batch), time.Now())
			ws := make([]p2p.ChunkWant, len(next))
			for i, w := range next {
				ws[i] = ask(s, w)
			}
			f.unlockTaken(had)
			if len(next) > 0 {
				extended++
				batch = append(batch, next...)
			}
			return ws
		}
	}
	f.unlockQuiet()
	var later []*want
	var after time.Duration
	defer func() { f.undeferAfter(p, later, after) }()
	err = f.net.FetchMore(ctx, p, wants, window, more, func(i int, data []byte, err error) error {
		watchdog.Reset(f.opts.StallTimeout)
		w := batch[i]
		var le *p2p.LaterError
		if errors.As(err, &le) {
			// A peer may keep us waiting as long as it may stall, no
			// longer. Deferred wants go back to the others when the batch
			// ends (release wakes the waiters).
			d := min(le.After, f.opts.StallTimeout)
			if le.Busy {
				busy = max(busy, d)
				return nil
			}
			pointed := f.lock().deferred(p, w, le.To) // sent to another peer
			f.unlockQuiet()
			if pointed {
				select { // follow it now, not at the next tick
				case f.pointed <- struct{}{}:
				default:
				}
			}
			later, after = append(later, w), max(after, d)
			return nil
		}
		if err != nil { // the peer does not have it after all (lied in have)
			why := f.lock().lacks(p, w)
			f.unlock()
			if why != "" {
				f.log.Warn("dropping peer for this sync", "peer", p, "reason", why)
				return &p2p.BadDataError{Peer: p, Detail: why}
			}
			return nil
		}
		return f.deliver(p, w, data)
	})
	var silent *p2p.SilentConnError
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) && !errors.As(err, &silent) {
		return batch, extended, busy, errStalled
	}
	return batch, extended, busy, err
}

// undeferAfter lets p be asked again, after d, for those of ws nobody
// else holds by then, and asks again after d about the others.
func (f *transfer) undeferAfter(p peer.ID, ws []*want, d time.Duration) {
	if len(ws) == 0 {
		return
	}
	time.AfterFunc(d, func() {
		select {
		case <-f.ended:
			return
		default:
		}
		still := f.lock().undefer(p, ws)
		f.unlock()
		f.undeferAfter(p, still, d)
	})
}

// deliver writes a verified chunk into its spool, unless another peer's
// copy got there first.
func (f *transfer) deliver(p peer.ID, w *want, data []byte) error {
	s := f.lock()
	mine, sp := s.claim(w), w.st.spool
	f.unlockQuiet()
	if !mine {
		return nil
	}
	err := sp.writeAt(data, w.off)
	s = f.lock()
	if err != nil {
		defer f.unlock()
		return s.writeFailed(w, err)
	}
	now := time.Now()
	flight := s.flightCap(now)
	s.delivered(p, w, len(data), now)
	if f.haves != nil && !w.abandoned() {
		f.gained(s, w)
	}
	// The cap on requests out grows with the rate received, and only a
	// chunk in raises it: a worker held back by it may ask now.
	f.unlockUnpacking(s.swarm && s.flightCap(now) > flight)
	return nil
}

// relocateEvery is how often a running fetch asks connected peers that
// do not speak the haves protocol which unfinished paths they have.
var relocateEvery = 500 * time.Millisecond

// relocate keeps finding who holds what is still being fetched: it
// subscribes to what the peers it follows hold of the paths it fetches
// now and next (follow), which then push what they gain, chunk by chunk;
// and it asks peers that do not speak haves every relocateEvery which of
// those paths they have (without haves, every peer, of every unfinished
// path). This is what lets a room of followers serve each other instead
// of all pulling from the one seeder. Paths beyond those followed are
// asked of nobody: no pick reaches them before the paths followed move
// on to them (rewatch).
func (f *transfer) relocate(ctx context.Context, workers *sync.WaitGroup) {
	t := time.NewTicker(min(relocateEvery, watchEvery))
	defer t.Stop()
	fw := &following{subs: map[peer.ID]*sub{}}
	lastAsk := time.Now() // the plan just asked
	for first := true; ; first = false {
		if !first { // subscribe at once, poll from the next tick
			select {
			case <-ctx.Done():
				return
			case <-f.ended:
				return
			case <-t.C:
			case <-f.pointed:
			}
		}
		var legacy []peer.ID
		if f.haves != nil {
			legacy = f.follow(ctx, workers, fw)
		}
		if time.Since(lastAsk) < relocateEvery {
			continue
		}
		lastAsk = time.Now()
		open := f.lock().open()
		f.unlock()
		if len(open) == 0 {
			continue
		}
		var hashes []nix.PathHash
		var items []*item
		for _, it := range open {
			if h := it.info.Path.Hash; f.haves == nil || fw.watched[h] {
				hashes = append(hashes, h)
				items = append(items, it)
			}
		}
		var found [][]peer.ID
		switch {
		case len(hashes) == 0:
		case f.haves == nil:
			found = f.locate(ctx, hashes)
		case len(legacy) > 0:
			found = f.ask(ctx, legacy, hashes)
		}
		s := f.lock()
		var start []peer.ID
		for i, it := range items {
			if i < len(found) {
				start = append(start, s.addProviders(it, found[i])...)
			}
		}
		f.unlock()
		for _, p := range start {
			f.spawn(p)
		}
	}
}

// dropped says whether p was dropped from this transfer.
func (f *transfer) dropped(p peer.ID) bool {
	defer f.unlockQuiet()
	return f.lock().peers.dropped(p)
}
