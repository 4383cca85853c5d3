package fetch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// scheduler decides everything a transfer decides: which chunks to hand
// which peer (pulled, in plan order, shared among the live peers, then
// duplicated in the endgame), when a peer is dropped, when a chunk nobody
// can serve fails the transfer or makes its item be described again, and
// which complete item to unpack next within the budget of bytes held
// twice on disk.
//
// It does no I/O, starts no goroutine and reads no clock: times come in
// as arguments, and what must be done outside (discard a staged tree,
// start a worker) comes back as results. It is not safe for concurrent
// use: transfer owns one and calls it only with transfer.mu held. Its
// fields, and those of the itemStates, wants and peerStates it holds,
// change only through its methods.
type scheduler struct {
	plan     *plan
	storeDir string
	window   int // chunk requests in flight per peer, shared by its streams

	items map[nix.PathHash]*itemState
	// order is the items in the order they were first described (the
	// fetch order: fetchOrder); pending counts their queued wants, those
	// requested from nobody (itemState.queued).
	order   []*itemState
	pending int
	picks   uint64 // pick calls so far (itemState.ahead)
	// aheadFrom: the items of the plan before it are fetched (ahead).
	aheadFrom int
	err       error // set once, by fail; errFinished after success
	peers     peerBook
	// ready holds the items an ingest worker should take next, each once:
	// those in phase queued or stale, and no others. Items are unpacked in
	// the order they complete, whatever their place in the graph, and
	// committed once their references are (referrers says whom to look at
	// after a commit).
	ready     []*itemState
	referrers map[nix.PathHash][]*itemState
	// held is the NAR bytes of the items being unpacked or unpacked and
	// waiting for their references: each takes disk twice, as spool and
	// as tree, until it is committed. nextIngest keeps it within budget.
	held, budget uint64
	// inOrder says the store adds a path only once its references are
	// valid (Nix's store restores and registers in one step), so nothing
	// is unpacked ahead of its references.
	inOrder bool

	bytesFetched, bytesReused, bytesResumed, bytesDone, bytesTotal int64
	pathsDone                                                      int

	// streamOK says an item may be unpacked while its chunks arrive (two
	// ingest workers or more: one stays for the items that complete);
	// streamed is the one that is (toStream), streamScan the plan items
	// toStream need not look at again.
	streamOK   bool
	streamed   *itemState
	streamScan int
	// zstdGot is what came compressed from every peer (wire, raw);
	// noShrink says it did not shrink: no peer is asked for compressed
	// chunks again (compress).
	zstdGot  [2]int64
	noShrink bool
	// swarm says some peer holds part of a path (another follower): then
	// batches are smaller (swarmBatch).
	swarm bool
	// capped says some connected peer is not followed (swarmFollow);
	// followAll, that a chunk turned out to have nobody followed left to
	// serve it while capped: every peer is then followed, and the
	// transfer judged again once all have been asked what they hold
	// (follow).
	capped, followAll bool
	// pointed are the peers Later answers said their chunks went to,
	// newest last, for follow to take.
	pointed []peer.ID
	// firstTake is when the first chunk request went (flightCap).
	firstTake time.Time
	intn      func(int) int // picks at random
	cand      []*want       // pick's scratch space
}

// itemState is one item's progress through a transfer.
type itemState struct {
	it    *item
	phase phase
	spool *spool // where its chunks land; the scheduler never touches it
	wants []*want
	left  int // wants of this description not done
	// desc numbers the item's descriptions: abandon ends one, and the
	// wants of an earlier one are abandoned (want.abandoned).
	desc int
	// staged is the unpacked, verified NAR waiting for its references to
	// become valid before it is committed.
	staged staged
	// in says which chunks of the description are in the spool; chunks
	// before next all are (prefix).
	in   []bool
	next int
	// noStream: a streamed unpacking of this description (toStream)
	// failed before its chunks were all in; it is unpacked the ordinary
	// way once they are.
	noStream bool
	// queued is a bitfield (bit) over the item's chunk index of the wants
	// requested from nobody (pick's candidates), nqueued how many; at is
	// the want of each position of the index, nil for chunks not wanted.
	queued  []byte
	nqueued int
	at      []*want
	// ahead is the number of the last pick that found the item among
	// the first being fetched (scheduler.ahead).
	ahead uint64
}

// phase is where an item stands. An item moves
//
//	fetching → queued → unpacking → committed
//	fetching → stale → redescribing → (reset) fetching
//	unpacking → (evicted) queued; unpacking → (lied) redescribing
//
// waits in scheduler.ready exactly while queued or stale, and holds its
// NAR twice on disk (scheduler.held) exactly while unpacking.
type phase uint8

const (
	// fetching: chunks of its description are still missing.
	fetching phase = iota
	// queued: every chunk is in; it waits for an ingest worker.
	queued
	// stale: the peer that described it was dropped while chunks are
	// missing and no other peer serves them: its chunk index may be a lie
	// only the liar can serve, so it waits for an ingest worker to have
	// it described again.
	stale
	// unpacking: an ingest worker unpacks it, or it is unpacked (staged)
	// and waits for its references.
	unpacking
	// redescribing: an ingest worker has it described again.
	redescribing
	// committed: it is valid.
	committed
)

// complete moves st, all of whose chunks are in, to queued; it says
// whether st is to be queued now (it was fetching).
func (st *itemState) complete() bool { return st.from(fetching, queued) }

// orphaned moves st, whose chunks nobody left can serve, to stale; it
// says whether st is to be queued now (it was fetching).
func (st *itemState) orphaned() bool { return st.from(fetching, stale) }

// take hands st, queued or stale, to an ingest worker: to unpacking or
// redescribing.
func (st *itemState) take() {
	if !st.from(stale, redescribing) {
		st.phase = unpacking
	}
}

// from moves st to phase to if it is in phase was, and says whether it was.
func (st *itemState) from(was, to phase) bool {
	if st.phase != was {
		return false
	}
	st.phase = to
	return true
}

// want is one chunk of one description of an item.
type want struct {
	st       *itemState
	desc     int // the description of st it belongs to
	ref      chunk.Ref
	i        int // its position in the item's chunk index
	off      uint64
	done     bool
	inflight map[peer.ID]bool
	// avail is how many usable peers hold it (provide its path whole, or
	// said they hold it): the rarest go first.
	avail int
}

// abandoned says w belongs to a description of its item since given up.
func (w *want) abandoned() bool { return w.desc != w.st.desc }

// errFinished stops the workers after every path is in.
var errFinished = errors.New("finished")

// errBusy is why a worker waits before asking its peer again: the peer
// serves as many peers as it will at once.
var errBusy = errors.New("peer busy")

// errStalled is why a batch was cut off: the peer sent nothing for the
// stall timeout.
var errStalled = p2p.ErrStalled

func newScheduler(pl *plan, storeDir string, window int) *scheduler {
	s := &scheduler{plan: pl, storeDir: storeDir, window: window, peers: peerBook{}, intn: rand.IntN,
		items: map[nix.PathHash]*itemState{}, referrers: map[nix.PathHash][]*itemState{}}
	for _, it := range pl.items {
		s.bytesTotal += int64(it.info.NarSize)
	}
	return s
}

// fail records the end of the transfer (the first error wins).
func (s *scheduler) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// reset starts a new description of st's item: sp is its spool, missing
// the indexes of the chunks neither the spool nor the store holds.
func (s *scheduler) reset(st *itemState, sp *spool, missing []int, resumed, reused int64) {
	it := st.it
	if s.items[it.info.Path.Hash] == nil {
		s.order = append(s.order, st)
	}
	s.pending -= st.nqueued
	*st = itemState{it: it, phase: fetching, spool: sp, desc: st.desc,
		queued: make([]byte, (len(it.index)+7)/8), at: make([]*want, len(it.index))}
	s.items[it.info.Path.Hash] = st
	s.bytesResumed += resumed
	s.bytesReused += reused
	s.bytesDone += resumed + reused
	st.in = make([]bool, len(it.index))
	for i := range st.in {
		st.in[i] = true
	}
	for _, i := range missing {
		w := &want{st: st, desc: st.desc, ref: it.index[i], i: i, off: it.offs[i], inflight: map[peer.ID]bool{}}
		st.wants = append(st.wants, w)
		st.at[i] = w
		st.left++
		st.in[i] = false
		s.enqueue(w)
	}
	st.advance()
	s.recount(st)
	s.maybeComplete(st)
}

// advance moves st's prefix over the chunks in.
func (st *itemState) advance() {
	for st.next < len(st.in) && st.in[st.next] {
		st.next++
	}
}

// prefix is how many of the NAR's first bytes are in the spool.
func (st *itemState) prefix() uint64 {
	if st.next < len(st.it.offs) {
		return st.it.offs[st.next]
	}
	return st.it.info.NarSize
}

// maybeComplete queues st once its chunks are all in, or, when an ingest
// worker streams it, lets that worker finish unpacking it.
func (s *scheduler) maybeComplete(st *itemState) {
	switch {
	case st.left > 0:
	case s.streamed == st:
		st.from(fetching, unpacking) // held since streaming began
	case st.complete():
		s.ready = append(s.ready, st)
	}
}

// addStream counts one more worker for p.
func (s *scheduler) addStream(p peer.ID) { s.peers.get(p).streams++ }

// canServe says whether ps may be asked for w.
func (s *scheduler) canServe(ps *peerState, w *want) bool {
	return ps.offers(w.st).has(w) && !ps.later[w]
}

// offer is what a peer may be asked for of one item: nothing (it is
// dropped or lacks the path), every chunk (it provides the path whole),
// or those its have messages set in bits. pick works it out once per
// item and matches it against the item's queued chunks 64 at a time
// (candidates).
type offer struct {
	usable, whole bool
	bits          []byte
}

func (ps *peerState) offers(st *itemState) offer {
	h := st.it.info.Path.Hash
	return offer{usable: ps.usable(h), whole: slices.Contains(st.it.providers, ps.id), bits: ps.chunks[h]}
}

func (o offer) has(w *want) bool {
	return o.usable && (o.whole || bit(o.bits, w.i))
}

// take hands p up to n chunks to request. stop says p is done (dropped,
// or the transfer is over); an empty batch without stop means nothing is
// for p now but may be later. A peer stays until the end even when
// nothing is left to fetch: an item whose NAR proves its chunk index a lie
// is fetched again.
func (s *scheduler) take(p peer.ID, n int, now time.Time) (batch []*want, stop bool) {
	ps := s.peers.get(p)
	if s.err != nil || ps.dropped != "" {
		return nil, true
	}
	if s.firstTake.IsZero() {
		s.firstTake = now
	}
	// Share what is left among the peers still working, so one peer does
	// not take a whole small remainder while others idle.
	if live := s.peers.live(); live > 1 {
		n = max(4, min(n, s.pending/live))
	}
	if s.swarm {
		n = min(n, swarmBatch)
	}
	n = min(n, ps.batchFor())
	if s.swarm {
		if n = min(n, s.room(ps, now)); n <= 0 {
			return nil, false
		}
	}
	return s.handOut(ps, n), false
}

// room is how many more chunk requests ps may have out at now in a
// swarm. Each peer may have half of them: the worker that just got its
// batch asks again first, and would keep them all.
func (s *scheduler) room(ps *peerState, now time.Time) int {
	flight := s.flightCap(now)
	return min(flight-s.peers.inFlight(), max(1, flight/2)-ps.inFlight)
}

// handOut picks up to n chunks for ps (in the endgame, chunks in flight
// elsewhere) and counts them out to it.
func (s *scheduler) handOut(ps *peerState, n int) []*want {
	batch := s.pick(ps, n)
	if len(batch) == 0 && s.pending == 0 {
		batch = s.endgame(ps, n)
	}
	ps.inFlight += len(batch)
	return batch
}

// extend hands p one more chunk, if any, to ask on the stream of a batch
// of asked chunks whose last is half in (p2p.FetchMore): that chunk no
// longer counts against how many may be out, since its bytes are most of
// the way, and the next goes right behind it. Only in a swarm, where a
// batch is a chunk or two and each batch's round trip would idle p's
// link, and only up to swarmBatch chunks a stream, after which p's
// upload slot goes back to whoever else waits for it. When it hands one,
// release is to be told the batch was extended once more.
func (s *scheduler) extend(p peer.ID, asked int, now time.Time) (next []*want) {
	ps := s.peers.get(p)
	if !s.swarm || asked >= swarmBatch || s.err != nil || ps.dropped != "" {
		return nil
	}
	ps.inFlight--
	if s.room(ps, now) > 0 {
		next = s.handOut(ps, 1)
	}
	if len(next) == 0 {
		ps.inFlight++
	}
	return next
}

// endgame picks chunks in flight on other peers that ps could also serve:
// the first copy to arrive wins.
func (s *scheduler) endgame(ps *peerState, n int) []*want {
	var batch []*want
	for _, it := range s.plan.items {
		st := s.items[it.info.Path.Hash]
		if st.left == 0 {
			continue
		}
		for _, w := range st.wants {
			if len(batch) >= n {
				return batch
			}
			if !w.done && len(w.inflight) > 0 && !w.inflight[ps.id] && s.canServe(ps, w) {
				w.inflight[ps.id] = true
				batch = append(batch, w)
			}
		}
	}
	return batch
}

// began notes that p starts a batch at now and says how many requests it
// may have in flight on one stream.
func (s *scheduler) began(p peer.ID, now time.Time) (window int) {
	ps := s.peers.get(p)
	if ps.first.IsZero() {
		ps.first = now
	}
	return max(1, s.window/max(1, ps.streams))
}

// deferred notes that p answered w Later: it sent w's chunk to peer to.
// p is not asked for it again while another peer can be (undefer); to is
// followed, if the transfer does not follow it yet (follow). It says
// whether to is new among those to follow.
func (s *scheduler) deferred(p peer.ID, w *want, to peer.ID) (pointed bool) {
	if w.done || w.abandoned() {
		return false
	}
	if to != "" && !slices.Contains(s.pointed, to) {
		if len(s.pointed) >= maxPointed {
			s.pointed = slices.Delete(s.pointed, 0, 1)
		}
		s.pointed = append(s.pointed, to)
		pointed = true
	}
	ps := s.peers.get(p)
	if ps.later == nil {
		ps.later = map[*want]bool{}
	}
	ps.later[w] = true
	ps.beyond = s.aheadFrom + 1
	return pointed
}

// maxPointed bounds the peers a transfer remembers Later answers pointed
// it to, until follow takes them.
const maxPointed = 16

// undefer lets p be asked again for those of ws that no other peer can
// be asked for now, this time insisting (mayDefer says no), and returns
// the others: p was right, they are to be had elsewhere, and asking p
// again would send them twice. Ask again later whether they still are.
func (s *scheduler) undefer(p peer.ID, ws []*want) (still []*want) {
	ps := s.peers.get(p)
	for _, w := range ws {
		if !ps.later[w] {
			continue
		}
		if !w.done && !w.abandoned() && ps.dropped == "" && s.elsewhere(ps, w) {
			still = append(still, w)
			continue
		}
		delete(ps.later, w)
		if !w.done && !w.abandoned() {
			if ps.insist == nil {
				ps.insist = map[*want]bool{}
			}
			ps.insist[w] = true
		}
	}
	return still
}

// mayDefer says whether p may answer w Later: not once p deferred it and
// nobody else could be asked.
func (s *scheduler) mayDefer(p peer.ID, w *want) bool { return !s.peers.get(p).insist[w] }

// elsewhere says whether a peer other than ps may be asked for w now.
func (s *scheduler) elsewhere(ps *peerState, w *want) bool {
	for _, q := range s.peers {
		if q != ps && s.canServe(q, w) {
			return true
		}
	}
	return false
}

// lacks notes that p said it does not have w after all: it lied in have
// (then it is not asked for the path again), or in a have message (then
// missed decides); droppedNow says why p was dropped if this dropped it.
func (s *scheduler) lacks(p peer.ID, w *want) (droppedNow string) {
	if w.abandoned() {
		return ""
	}
	if !provides(w.st.it, p) {
		return s.missed(p, w)
	}
	s.peers.get(p).lacks[w.st.it.info.Path.Hash] = true
	s.recount(w.st)
	return ""
}

// claim marks w as arrived, unless another peer's copy got there first:
// only the claimant writes it.
func (s *scheduler) claim(w *want) bool {
	if w.done {
		return false
	}
	w.done = true
	return true
}

// delivered records that p's copy of the claimed w, n bytes, is in its
// spool at now.
func (s *scheduler) delivered(p peer.ID, w *want, n int, now time.Time) {
	ps := s.peers.get(p)
	ps.bytes += int64(n)
	ps.last = now
	s.bytesFetched += int64(n)
	if w.abandoned() {
		return
	}
	s.bytesDone += int64(n)
	w.st.left--
	w.st.in[w.i] = true
	w.st.advance()
	s.maybeComplete(w.st)
}

// writeFailed records that the claimed w could not be written to its
// spool; it returns the error to end the batch with, nil if it does not
// matter (its item was restarted and the old spool removed).
func (s *scheduler) writeFailed(w *want, err error) error {
	if w.abandoned() && errors.Is(err, os.ErrClosed) {
		return nil
	}
	s.fail(fmt.Errorf("fetching %s: %w", w.st.it.info.Path.Abs(s.storeDir), err))
	return err
}

// release takes p off the wants of a finished batch, extended times by
// extend; those nobody else is fetching are queued again.
func (s *scheduler) release(p peer.ID, batch []*want, extended int) {
	s.peers.get(p).inFlight -= len(batch) - extended
	var checked *itemState
	for _, w := range batch {
		delete(w.inflight, p)
		if !w.done && len(w.inflight) == 0 {
			s.enqueue(w)
			// Someone must still be able to serve what came back.
			if w.st != checked {
				checked = w.st
				s.checkProvided(w.st)
			}
		}
	}
}

// enqueue makes w, requested from nobody, a candidate for pick again.
func (s *scheduler) enqueue(w *want) {
	st := w.st
	if w.abandoned() || bit(st.queued, w.i) {
		return
	}
	setBit(st.queued, w.i)
	st.nqueued++
	s.pending++
}

// dequeue takes w off pick's candidates: it is requested, or given up.
func (s *scheduler) dequeue(w *want) {
	st := w.st
	if w.abandoned() || !bit(st.queued, w.i) {
		return
	}
	clearBit(st.queued, w.i)
	st.nqueued--
	s.pending--
}

// batchFailed decides what a batch p failed with means: bad data and a
// stall drop p at once, other errors after three. It returns whether p is
// out of this transfer (and why, if this dropped it), and if not how long
// its worker should wait before its next batch.
func (s *scheduler) batchFailed(p peer.ID, err error) (out bool, droppedNow string, backoff time.Duration) {
	ps := s.peers.get(p)
	var bad *p2p.BadDataError
	why := ""
	switch {
	case errors.As(err, &bad):
		ps.bad++
		why = "sent bad data: " + bad.Detail
	case errors.Is(err, errStalled):
		why = "stalled"
	default:
		ps.failures++
		if ps.failures >= 3 {
			why = err.Error()
		}
	}
	if why != "" && s.dropPeer(p, why) {
		droppedNow = why
	}
	return ps.dropped != "", droppedNow, time.Duration(200*ps.failures) * time.Millisecond
}

// widen says whether p, whose batch of bytes took d, gets one more
// stream; if so it is counted.
func (s *scheduler) widen(p peer.ID, bytes int64, d time.Duration) bool {
	if bytes < 1<<20 || float64(bytes)/d.Seconds() < fastStream {
		return false
	}
	ps := s.peers.get(p)
	if ps.streams >= maxStreamsPerPeer || ps.dropped != "" || s.err != nil {
		return false
	}
	ps.streams++
	return true
}

// dropPeer removes p from this transfer; its chunks go to the others. It
// says whether p was dropped now (not before).
func (s *scheduler) dropPeer(p peer.ID, why string) bool {
	ps := s.peers.get(p)
	if ps.dropped != "" {
		return false
	}
	ps.dropped = why
	s.recountAll()
	s.checkProviders()
	return true
}

// checkProviders fails the transfer if some chunk has nobody left to
// serve it, or marks its item stale when another peer can describe it.
func (s *scheduler) checkProviders() {
	for _, st := range s.items {
		if !s.checkProvided(st) {
			return
		}
	}
}

// checkProvided is checkProviders for st alone; it says whether to go on
// checking others (false once the transfer failed, or every peer is to
// be followed first).
func (s *scheduler) checkProvided(st *itemState) bool {
	if s.err != nil {
		return false
	}
	if st.phase != fetching {
		return true
	}
	h := st.it.info.Path.Hash
	alive := slices.ContainsFunc(st.it.providers, func(p peer.ID) bool {
		ps := s.peers[p]
		return ps != nil && ps.usable(h)
	})
	if alive || s.heldElsewhere(st) {
		return true
	}
	if s.redescribable(st) && st.orphaned() {
		s.unstream(st) // its worker gives up (ingest.go)
		s.ready = append(s.ready, st)
		return true
	}
	if s.capped {
		// A peer not followed may hold what is missing: follow them
		// all before giving up.
		s.followAll = true
		return false
	}
	var why []string
	for _, p := range st.it.providers {
		if ps := s.peers[p]; ps != nil {
			r := ps.dropped
			if r == "" && ps.lacks[h] {
				r = "does not have it after all"
			}
			why = append(why, fmt.Sprintf("%s: %s", p, r))
		}
	}
	s.fail(fmt.Errorf("no peer left to fetch %s from (%v); %s of %s are kept, so running the sync again when a peer that has it is back resumes",
		st.it.info.Path.Abs(s.storeDir), why, humanBytes(s.bytesDone), humanBytes(s.bytesTotal)))
	return false
}

// redescribable says whether an item nobody can serve any more should be
// described again: the peer that described it was dropped, so its chunk
// index may be one that only that peer can serve, and another provider is
// still there to ask.
func (s *scheduler) redescribable(st *itemState) bool {
	return s.peers.dropped(st.it.infoFrom) && len(s.others(st.it)) > 0
}

// others are the providers of it other than its describer that are not
// dropped.
func (s *scheduler) others(it *item) []peer.ID {
	var out []peer.ID
	for _, p := range it.providers {
		if p != it.infoFrom && !s.peers.dropped(p) {
			out = append(out, p)
		}
	}
	return out
}

// open lists the items with chunks still missing, in plan order.
func (s *scheduler) open() []*item {
	var out []*item
	for _, it := range s.plan.items {
		if st := s.items[it.info.Path.Hash]; st != nil && st.left > 0 {
			out = append(out, it)
		}
	}
	return out
}

// addProviders adds found as providers of it and returns those the
// transfer has never met, each counted as one stream: start a worker each.
func (s *scheduler) addProviders(it *item, found []peer.ID) (start []peer.ID) {
	for _, p := range found {
		if slices.Contains(it.providers, p) {
			continue
		}
		it.providers = append(it.providers, p)
		if ps, ok := s.peers[p]; !ok || ps.streams == 0 {
			s.addStream(p)
			start = append(start, p)
		}
		if st := s.items[it.info.Path.Hash]; st != nil {
			s.recount(st)
		}
	}
	return start
}

// meetProviders counts one stream for every provider of the plan not met
// yet and returns them, to start a worker each; then it checks that every
// item has a provider.
func (s *scheduler) meetProviders() (start []peer.ID) {
	for _, it := range s.plan.items {
		for _, p := range it.providers {
			if _, ok := s.peers[p]; !ok {
				s.addStream(p)
				start = append(start, p)
			}
		}
	}
	s.checkProviders()
	return start
}

// lied records that p described an item with a chunk index that does not
// produce its NAR, and drops it; it says whether p was dropped now.
func (s *scheduler) lied(p peer.ID, why string) bool {
	s.peers.get(p).bad++
	return s.dropPeer(p, why)
}
