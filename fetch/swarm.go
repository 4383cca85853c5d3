package fetch

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// The scheduler's decisions for a room of peers fetching the same closure
// (a swarm): what each peer holds, chunk by chunk, as it said in its have
// messages; how many peers hold each wanted chunk (its availability);
// which chunks to ask of whom (random first, then rarest first, so that
// a seeder is asked for what nobody else has and followers for what they
// have); and what a peer that advertises chunks it then does not serve
// gets. Like the rest of the scheduler these do no I/O.

// swarmBatch is the most chunks one batch asks of a peer once the peers
// of a swarm are known: a smaller batch keeps what others do not yet know
// is in flight small, so two followers rarely ask the seeder for the same
// chunk. It is also the most a batch grows to as its chunks arrive
// (extend), which saves a round trip per chunk: then the stream ends and
// the peer's upload slot goes to whoever else waits for it.
const swarmBatch = 16

// batchTime is about how long one batch should take a peer: what is in
// flight on a peer cannot be asked of others, and a slow peer (a seeder
// shared by a room) handed a long batch holds chunks that followers
// holding them could serve. A peer whose rate is not known yet gets
// firstBatch chunks: few, because a follower's first batch goes out before
// it has heard whether other followers share its sync, so in a room every
// follower's first batch asks the seeder for the same chunks in plan order
// (16 made the simulated room of 16 send 6× the closure, 4 made it 4×);
// on a fast link the rate is known after that one short batch.
const (
	batchTime  = 500 * time.Millisecond
	firstBatch = 4
)

// batchFor is how many chunks p may be handed at once: about batchTime
// at its rate so far, at least 4.
func (ps *peerState) batchFor() int {
	rate, ok := ps.rate(1)
	if !ok {
		return firstBatch
	}
	return max(4, int(rate*batchTime.Seconds()/float64(64<<10)))
}

// A follower in a swarm keeps few chunk requests out at once, over all its
// peers: about swarmFlight of its link at the rate it has received so far,
// and at least minSwarmFlight (one arriving, one asked for). A chunk is
// passed on only once it is whole, so how fast it spreads through a room
// is how fast it crosses one link: twelve requests out at once share the
// downlink twelve ways and each chunk arrives twelve times later; what a
// follower has asked for cannot be asked of peers that got it since; and
// an uploader serving a follower whose downlink is shared serves it
// slowly. Each peer may have at most half of them (one of two): a
// peer's worker asks again the moment its batch is in, and would
// otherwise keep every request on that peer, however slow (a seeder on
// 16 Mbit/s held them while a follower on the LAN waited). In the
// simulated room of 64 (trove bench sim), two requests out
// at once took the median follower from 2.3× one follower's time to
// 1.5–1.7×. On 100 Mbit/s, 10 ms is two chunks; on a gigabit LAN twenty.
const (
	swarmFlight    = 10 * time.Millisecond
	minSwarmFlight = 2
)

// flightCap is how many chunk requests a transfer in a swarm may have out
// at now.
func (s *scheduler) flightCap(now time.Time) int {
	d := now.Sub(s.firstTake)
	if s.bytesFetched == 0 || d <= 0 {
		return minSwarmFlight
	}
	rate := float64(s.bytesFetched) / d.Seconds()
	return max(minSwarmFlight, int(rate*swarmFlight.Seconds()/float64(chunk.AvgSize)))
}

// rate is the bytes per second p delivered from its first request to its
// last delivery; ok is false before it delivered least bytes.
func (ps *peerState) rate(least int64) (rate float64, ok bool) {
	d := ps.last.Sub(ps.first)
	if ps.bytes < least || d <= 0 {
		return 0, false
	}
	return float64(ps.bytes) / d.Seconds(), true
}

// A sync asks a peer for zstd-compressed chunks (p2p/compress.go) once
// the link from it measures slower than compressBelow, and stops once it
// measures faster than compressAbove (the rate is of the chunks'
// uncompressed bytes, which compression raises: the gap keeps a link
// from flapping). zstd's default level compresses well over 100 MB/s on
// one core (faster on data that does not shrink, which it sends as raw
// blocks) and decodes faster, so below 40 MB/s (a 320 Mbit/s link) it
// gains whatever shrinks and costs little; on loopback and gigabit LANs a
// sync asks only for its first megabytes. Until a peer's rate is known
// (firstMeasure) its chunks are asked for compressed, and the first
// measure decides against compressBelow alone: a first batch sent
// uncompressed cost a slow link a quarter of a megabyte of text, 5% of
// Go's runtime source over 20 Mbit/s, and compressing the first
// megabytes costs a loopback sync of a gigabyte about 1%.
const (
	firstMeasure  = 1 << 20
	compressBelow = 40e6
	compressAbove = 400e6
)

// shrinkMeasure is how many chunk bytes must have come compressed in a
// transfer, from any of its peers, before it is judged whether they
// shrink; notShrunk is the share of them the wire must carry to stop
// asking every peer: data that does not shrink (already compressed, or
// random) costs both ends CPU for nothing (the stream sends it as raw
// blocks), and a room of machines on 100 Mbit/s is CPU-bound on two
// cores. Whether bytes shrink is a matter of the closure, not of the
// peer that sends them: judged peer by peer, a follower in a room of 16
// had a megabyte compressed by each of its peers, 16 in all.
const (
	shrinkMeasure = 1 << 20
	notShrunk     = 0.9
)

// judgeShrink counts what came compressed from ps since the transfer last
// looked at its counters (wire, raw: the node's, Node.Compressed), and
// sets noShrink once the transfer's first megabyte did not shrink. The
// counters start over from zero when p's connections all close; then
// all they hold is new.
func (s *scheduler) judgeShrink(ps *peerState, wire, raw int64) {
	now := [2]int64{wire, raw}
	if ps.zstdSeenSet {
		gain := now
		if wire >= ps.zstdSeen[0] && raw >= ps.zstdSeen[1] {
			gain = [2]int64{wire - ps.zstdSeen[0], raw - ps.zstdSeen[1]}
		}
		s.zstdGot[0] += gain[0]
		s.zstdGot[1] += gain[1]
	}
	ps.zstdSeen, ps.zstdSeenSet = now, true
	w, r := s.zstdGot[0], s.zstdGot[1]
	s.noShrink = r >= shrinkMeasure && float64(w) > notShrunk*float64(r)
}

// compress says whether to ask p for compressed chunks, given mode and
// p's Compressed counters now.
func (s *scheduler) compress(p peer.ID, mode Compress, wire, raw int64) bool {
	ps := s.peers.get(p)
	switch mode {
	case CompressNever:
		return false
	case CompressAlways:
		return true
	}
	if !s.noShrink {
		s.judgeShrink(ps, wire, raw)
	}
	if s.noShrink { // for good: nothing comes compressed any more to say otherwise
		ps.zstd = false
		return false
	}
	if !ps.zstdKnown {
		// The first measure is over a megabyte or more: over a first
		// batch of four chunks the round trip and the seeder's first
		// reads weigh more than the link (on loopback, four compressed
		// chunks measured under 40 MB/s), and within it a few compressed
		// chunks come as one burst (on 20 Mbit/s they measured over 40).
		rate, ok := ps.rate(firstMeasure)
		if !ok {
			return true
		}
		ps.zstdKnown, ps.zstd = true, rate < compressBelow
		return ps.zstd
	}
	rate, ok := ps.rate(256 << 10)
	if !ok {
		return ps.zstd
	}
	switch {
	case rate < compressBelow:
		ps.zstd = true
	case rate > compressAbove:
		ps.zstd = false
	}
	return ps.zstd
}

// maxMisses is how many advertised chunks a peer may fail to serve before
// it is dropped: a chunk said to be held may honestly go (the path was
// described again), but not many.
const maxMisses = 8

// holds says whether ps said it holds the chunk at position i of h.
func (ps *peerState) holds(h nix.PathHash, i int) bool { return bit(ps.chunks[h], i) }

// bit says whether bit i of the bitfield b is set: bit i%8 of byte i/8,
// as have messages carry them (p2p.HaveEntry.Bits).
func bit(b []byte, i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }

// setBit sets bit i of the bitfield b; clearBit clears it.
func setBit(b []byte, i int)   { b[i/8] |= 1 << (i % 8) }
func clearBit(b []byte, i int) { b[i/8] &^= 1 << (i % 8) }

// provides says whether p is a whole-path provider of it.
func provides(it *item, p peer.ID) bool { return slices.Contains(it.providers, p) }

// wholeHolders are the peers that hold some path of the plan whole
// (providers of it, as far as the transfer knows).
func (s *scheduler) wholeHolders() map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, it := range s.plan.items {
		for _, p := range it.providers {
			m[p] = true
		}
	}
	return m
}

// holders are the usable peers that said they hold the chunk at position
// i of st's path, or provide the path whole. A peer dropped, or found to
// lack the path, is not believed: it is told of the chunk.
func (s *scheduler) holders(st *itemState, i int) []peer.ID {
	h := st.it.info.Path.Hash
	var out []peer.ID
	for _, p := range st.it.providers {
		if ps := s.peers[p]; ps == nil || ps.usable(h) {
			out = append(out, p)
		}
	}
	for p, ps := range s.peers {
		if bit(ps.chunks[h], i) && ps.usable(h) && !provides(st.it, p) {
			out = append(out, p)
		}
	}
	return out
}

// recount computes the availability of every want of st from scratch:
// the usable peers that provide its path whole or said they hold it.
func (s *scheduler) recount(st *itemState) {
	h := st.it.info.Path.Hash
	whole := 0
	for _, p := range st.it.providers {
		if ps := s.peers[p]; ps == nil || ps.usable(h) {
			whole++
		}
	}
	for _, w := range st.wants {
		w.avail = whole
	}
	for _, ps := range s.peers {
		if len(ps.chunks[h]) == 0 || !ps.usable(h) || provides(st.it, ps.id) {
			continue
		}
		for _, w := range st.wants {
			if ps.holds(h, w.i) {
				w.avail++
			}
		}
	}
}

// recountAll recounts every item (after a peer was dropped).
func (s *scheduler) recountAll() {
	for _, st := range s.items {
		s.recount(st)
	}
}

// haves applies what p said it holds (one message of a subscription to
// paths) and returns p if it must be met (start a worker). A message that
// cannot be true of the paths (a position past a chunk index's end, a
// bitfield of the wrong length) drops p: err says why.
func (s *scheduler) haves(p peer.ID, paths []nix.PathHash, msg *p2p.Haves) (start []peer.ID, err error) {
	ps := s.peers.get(p)
	if ps.dropped != "" || s.err != nil {
		return nil, nil
	}
	for _, e := range msg.Entries {
		h := paths[e.Path]
		st := s.items[h]
		if st == nil || st.it.valid {
			continue // not (or no longer) fetched here
		}
		n := len(st.it.index)
		switch {
		case e.All:
			start = append(start, s.addProviders(st.it, []peer.ID{p})...)
			delete(ps.chunks, h)
			s.recount(st)
		case e.Bits != nil:
			if len(e.Bits) != (n+7)/8 {
				return start, s.lie(p, fmt.Sprintf("said it holds a bitfield of %d bytes of %s, which has %d chunks", len(e.Bits), st.it.info.Path.Name, n))
			}
			if ps.chunks == nil {
				ps.chunks = map[nix.PathHash][]byte{}
			}
			ps.chunks[h] = slices.Clone(e.Bits)
			s.recount(st)
		default:
			b := ps.chunks[h]
			if b == nil {
				b = make([]byte, (n+7)/8)
				if ps.chunks == nil {
					ps.chunks = map[nix.PathHash][]byte{}
				}
				ps.chunks[h] = b
			}
			whole := provides(st.it, p)
			for _, i := range e.Add {
				if int(i) >= n {
					return start, s.lie(p, fmt.Sprintf("said it holds chunk %d of %s, which has %d", i, st.it.info.Path.Name, n))
				}
				if bit(b, int(i)) {
					continue
				}
				setBit(b, int(i))
				if !whole && ps.usable(h) {
					if w := st.at[i]; w != nil {
						w.avail++
					}
				}
			}
		}
		s.swarm = s.swarm || !e.All
	}
	if ps.streams == 0 && len(ps.chunks) > 0 {
		s.addStream(p)
		start = append(start, p)
	}
	return start, nil
}

// lie drops p for what it said in a have message; the error ends its
// subscription.
func (s *scheduler) lie(p peer.ID, why string) error {
	s.peers.get(p).bad++
	s.dropPeer(p, why)
	return fmt.Errorf("peer %s %s", p, why)
}

// missed records that p did not serve w although it said it holds it
// (not as a whole path: that is lacks). Its bit goes; a peer that misses
// too many is dropped.
func (s *scheduler) missed(p peer.ID, w *want) (droppedNow string) {
	ps := s.peers.get(p)
	h := w.st.it.info.Path.Hash
	if b := ps.chunks[h]; bit(b, w.i) {
		clearBit(b, w.i)
		if ps.usable(h) && !provides(w.st.it, p) {
			w.avail--
		}
	}
	ps.misses++
	if ps.misses >= maxMisses {
		why := fmt.Sprintf("advertised %d chunks it did not serve", ps.misses)
		ps.bad++
		if s.dropPeer(p, why) {
			return why
		}
	}
	s.checkProviders()
	return ""
}

// pick chooses up to n of the queued wants p can serve, marks them in
// flight on p and takes them off the queue.
//
// Alone with its seeders (no peer holds part of a path) a transfer takes
// them in fetch order: the plan's, rotated, which keeps each spool
// written in long runs. In a swarm it takes the rarest first (fewest
// usable peers hold them): a seeder is asked for what nobody else has, a
// follower for what it has that others lack. Among equally rare chunks it
// takes a run from a random place, so that followers asking the same
// seeder at once ask for different chunks (each then has something to
// trade at once), and spools are still written in runs. (It took its
// first 16 chunks at random from all it could ask a peer for, as
// BitTorrent does; from a seeder those included chunks followers held
// already, which the seeder then sent twice.) It takes them from the
// first paths in plan order first (ahead), so that paths complete, and
// are unpacked, as the transfer goes.
func (s *scheduler) pick(ps *peerState, n int) (batch []*want) {
	s.picks++
	if s.swarm {
		batch = s.ahead(ps, n)
	} else {
		s.cand = s.candidates(s.cand[:0], ps, n, anyItem)
		batch = slices.Clone(s.cand)
		clear(s.cand)
	}
	for _, w := range batch {
		w.inflight[ps.id] = true
		s.dequeue(w)
	}
	return batch
}

// pickScan is the most candidates one pick in a swarm weighs: rarest
// first is over the first this many in fetch order (after the window's),
// not over the whole closure. A pick looked at every chunk still
// queued, and a follower in a swarm picks about once a chunk, so a
// closure's picks took time in the square of its chunks: 28.5 µs a pick
// at 2,040 chunks, 326 µs at 20,400 and 8.4 ms at 204,000 (13 GB), with
// the transfer's lock held; now 5.7, 5.6 and 11.6 µs
// (BenchmarkSwarmPick). 4,096 chunks is about 256 MiB: the fanout's and
// the sim's closures are weighed whole, as before.
const pickScan = 4096

// candidates appends to dst the queued wants of the items that in
// accepts which ps may be asked for, in fetch order, up to limit of them.
// It looks at an item's chunks 64 at a time (its queued bitfield and
// what ps said it holds), so a closure of many chunks few of which are
// candidates costs a pass over its bitfields, not over its chunks.
func (s *scheduler) candidates(dst []*want, ps *peerState, limit int, in func(*itemState) bool) []*want {
	for _, st := range s.order {
		if len(dst) >= limit {
			break
		}
		if st.nqueued == 0 || !in(st) {
			continue
		}
		o := ps.offers(st)
		if !o.usable || !o.whole && len(o.bits) == 0 {
			continue
		}
		for k := 0; k*8 < len(st.queued) && len(dst) < limit; k++ {
			q := word(st.queued, k)
			if !o.whole {
				q &= word(o.bits, k)
			}
			for ; q != 0 && len(dst) < limit; q &= q - 1 {
				w := st.at[k*64+bits.TrailingZeros64(q)]
				if !w.done && !ps.later[w] {
					dst = append(dst, w)
				}
			}
		}
	}
	return dst
}

// anyItem lets candidates look at every item.
func anyItem(*itemState) bool { return true }

// word is the k-th 64 bits of the bitfield b (bit), zeros past its end.
func word(b []byte, k int) uint64 {
	if 8*k+8 <= len(b) {
		return binary.LittleEndian.Uint64(b[8*k:])
	}
	var w uint64
	for j := 8 * k; j < len(b); j++ {
		w |= uint64(b[j]) << (8 * (j - 8*k))
	}
	return w
}

// swarmAhead is how much of the closure a follower in a swarm asks for
// first: the first paths in plan order still being fetched, up to this
// many bytes of NAR. Rarest first over the whole closure completes every
// path near the end, and each follower then unpacks all of it at once:
// in the fanout (16 followers of 128 MiB sharing two cores) the last 5 s
// of 19 were unpacking, the links idle. Paths completed in plan order are
// unpacked while the rest arrives (a streaming BitTorrent client's
// sliding window does the same for playback). The window is wide enough
// that a room still trades: 32 MiB is 512 chunks. In the fanout it took
// the median follower from 1.56–1.78× one follower's time (5 runs) to
// 1.52–1.68× (7 runs).
var swarmAhead uint64 = 32 << 20

// ahead returns up to n wants for ps: rarest first (rarest) among the
// chunks of the first paths still being fetched, up to swarmAhead bytes
// of NAR (the window), and the rest rarest first among the others. It
// stamps the window's items with this pick's number.
//
// A peer that answered Later since the window last moved (deferred) is
// asked for the rarest chunks anywhere instead. Only a node that serves
// and fetches nothing (a seeder) answers Later, for a chunk it sent to
// another peer; the room's followers share one window (the plan's
// order), so once the seeder has sent each chunk of it to somebody,
// everything they ask of it there is Later, while what nobody holds yet
// lies beyond. In the fanout the seeder then sent nothing for a round
// trip after round trip, at every move of the window (about 440 Later
// answers before its last chunk): its link, which carries every chunk
// once and so sets the room's pace, averaged 9.0 MB/s of 12.5; asked
// beyond, about 25, and 9.6 and 10.8 MB/s (DESIGN.md, Limits).
func (s *scheduler) ahead(ps *peerState, n int) []*want {
	defer func() { clear(s.cand); s.cand = s.cand[:0] }()
	// The cursor passes only committed items: one queued, unpacking or
	// stale may be described again and fetched anew.
	items := s.plan.items
	for ; s.aheadFrom < len(items); s.aheadFrom++ {
		if st := s.items[items[s.aheadFrom].info.Path.Hash]; st == nil || st.phase != committed {
			break
		}
	}
	if ps.beyond == s.aheadFrom+1 {
		s.cand = s.candidates(s.cand[:0], ps, pickScan, anyItem)
		return s.rarest(s.cand, n)
	}
	var size uint64
	for _, it := range items[s.aheadFrom:] {
		if size >= swarmAhead {
			break
		}
		if st := s.items[it.info.Path.Hash]; st != nil && st.phase == fetching {
			st.ahead = s.picks
			size += it.info.NarSize
		}
	}
	window := func(st *itemState) bool { return st.ahead == s.picks }
	all := s.candidates(s.cand[:0], ps, pickScan, window)
	k := len(all)
	if k < n {
		all = s.candidates(all, ps, k+pickScan, func(st *itemState) bool { return !window(st) })
	}
	s.cand = all
	if k < n {
		return append(slices.Clone(all[:k]), s.rarest(all[k:], n-k)...)
	}
	return s.rarest(all, n)
}

// rarest returns the n of cand that the fewest peers hold (all of cand,
// in its order, if it has no more than n): all of those rarer than some
// availability, and a run of those at it starting at a random one.
// Counting by availability takes two passes over cand, without sorting.
func (s *scheduler) rarest(cand []*want, n int) []*want {
	if len(cand) <= n {
		return slices.Clone(cand)
	}
	lo, hi := cand[0].avail, cand[0].avail
	for _, w := range cand {
		lo, hi = min(lo, w.avail), max(hi, w.avail)
	}
	count := make([]int, hi-lo+1)
	for _, w := range cand {
		count[w.avail-lo]++
	}
	limit, took := lo, 0 // all of cand rarer than limit are taken
	for took+count[limit-lo] <= n {
		took += count[limit-lo]
		limit++
	}
	batch := make([]*want, 0, n)
	var at []*want // those at limit
	for _, w := range cand {
		switch {
		case w.avail < limit:
			batch = append(batch, w)
		case w.avail == limit:
			at = append(at, w)
		}
	}
	k := s.intn(len(at))
	for i := range n - took {
		batch = append(batch, at[(k+i)%len(at)])
	}
	return batch
}

// heldElsewhere says whether every chunk of st still missing is held by
// some usable peer that said so in a have message: st can complete
// without its whole-path providers.
func (s *scheduler) heldElsewhere(st *itemState) bool {
	for _, w := range st.wants {
		if !w.done && w.avail == 0 {
			return false
		}
	}
	return st.left > 0
}
