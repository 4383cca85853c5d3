package fetch

import (
	"slices"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// The scheduler's decisions about unpacking and committing. Like the rest
// of the scheduler they do no I/O: the ingest stage (ingest.go) unpacks,
// commits and discards what these methods tell it to.

// staged is an unpacked, verified NAR not valid yet (*store.Staged).
type staged interface {
	Commit() (*nix.PathInfo, error)
	Discard()
}

var _ staged = (*store.Staged)(nil)

// nextIngest takes the ready item to unpack now, or nil if none may start
// yet; discard are staged trees evicted to make room, for the caller to
// discard. stop says no item will ever be ready again: the transfer ended
// (see err) or every item is valid.
//
// An item whose references are valid is unpacked and committed at once;
// one whose references are not is unpacked ahead and waits for them.
// Either way its NAR is on disk twice (spool and tree) until its commit,
// and the bytes so held stay within the budget: an item starts only when
// it fits, or when nothing is held. Items that can be committed go first,
// and to make room for one, items unpacked ahead are evicted (their
// spools stay, so they are only unpacked again later); no item is
// unpacked ahead while one that could be committed waits, so the transfer
// always moves on.
func (s *scheduler) nextIngest() (st *itemState, discard []staged, stop bool) {
	if s.err != nil {
		return nil, nil, true
	}
	pick := slices.IndexFunc(s.ready, func(st *itemState) bool { return st.phase == stale || s.refsValid(st.it) })
	if pick < 0 {
		if st := s.toStream(); st != nil {
			return st, nil, false
		}
	}
	switch {
	case pick >= 0 && s.ready[pick].phase == stale:
		// Described again without unpacking: holds nothing.
	case pick >= 0:
		if size := s.ready[pick].it.info.NarSize; !s.fits(size) {
			discard = s.evict(size)
			if !s.fits(size) {
				return nil, discard, false // wait for the items being unpacked
			}
		}
	case s.inOrder:
		return nil, discard, len(s.ready) == 0 && s.pathsDone == len(s.plan.items)
	default:
		pick = slices.IndexFunc(s.ready, func(st *itemState) bool { return s.fits(st.it.info.NarSize) })
		if pick < 0 {
			return nil, discard, len(s.ready) == 0 && s.pathsDone == len(s.plan.items)
		}
	}
	st = s.ready[pick]
	s.ready = slices.Delete(s.ready, pick, pick+1)
	st.take()
	if st.phase == unpacking {
		s.held += st.it.info.NarSize
	}
	return st, discard, false
}

// streamMin is the smallest NAR an ingest worker unpacks while its
// chunks arrive: for a small one, waiting for the last chunk costs little.
const streamMin = 1 << 20

// toStream picks an item for an idle ingest worker to unpack while its
// chunks arrive, so that the unpacking of a large path (a Nix store
// unpacks a NAR as it downloads it) is mostly done when its last chunk
// comes: the first item in plan order being fetched, begun and large,
// if no other is streamed (a second ingest worker stays free for items
// that complete meanwhile) and its NAR fits the budget. Only the embedded
// store streams: it stages ahead of references. Items are fetched in
// plan order, so the items it passes that are no longer being fetched
// are not looked at again (one described again is unpacked the ordinary
// way).
func (s *scheduler) toStream() *itemState {
	if !s.streamOK || s.inOrder || s.streamed != nil {
		return nil
	}
	items := s.plan.items
	for ; s.streamScan < len(items); s.streamScan++ {
		if st := s.items[items[s.streamScan].info.Path.Hash]; st == nil || st.phase == fetching {
			break
		}
	}
	for _, it := range items[s.streamScan:] {
		st := s.items[it.info.Path.Hash]
		if st == nil || st.phase != fetching || st.noStream || st.next == 0 || st.spool == nil || it.info.NarSize < streamMin {
			continue
		}
		if !s.fits(it.info.NarSize) {
			return nil
		}
		s.streamed = st
		s.held += it.info.NarSize
		return st
	}
	return nil
}

// unstream lets go of st if it is the item streamed, and of its hold on
// the disk budget unless it is complete (unpacking holds it).
func (s *scheduler) unstream(st *itemState) {
	if s.streamed != st {
		return
	}
	s.streamed = nil
	if st.phase != unpacking {
		s.held -= st.it.info.NarSize
	}
}

// streaming says whether st, under description desc, is still the item
// streamed.
func (s *scheduler) streaming(st *itemState, desc int) bool {
	return s.streamed == st && st.desc == desc
}

// streamEnded records that the worker streaming st (its description
// desc) is done with it, ok or not; complete says whether st's chunks
// were all in by then (its unpacking goes on as an ordinary one's:
// committed, or a lie found). One that failed earlier is unpacked the
// ordinary way once complete.
func (s *scheduler) streamEnded(st *itemState, desc int, failed bool) (complete bool) {
	if !s.streaming(st, desc) {
		// Orphaned meanwhile: it waits to be described again, or is
		// described again already (and maybe streamed by another worker).
		return false
	}
	s.unstream(st)
	if st.phase == unpacking {
		return true
	}
	st.noStream = failed
	return false
}

// fits says whether a NAR of size bytes may be held twice now.
func (s *scheduler) fits(size uint64) bool { return s.held == 0 || s.held+size <= s.budget }

// evict takes items unpacked ahead off the disk budget until size fits, or
// none is left, and queues them again; it returns their staged trees.
func (s *scheduler) evict(size uint64) (discard []staged) {
	for _, st := range s.items {
		if s.fits(size) {
			break
		}
		if st.staged != nil && s.leave(st, queued) {
			discard = append(discard, st.staged)
			st.staged = nil
			s.ready = append(s.ready, st)
		}
	}
	return discard
}

// leave moves st, if it is unpacking, to phase to, taking its NAR off the
// bytes held twice; it says whether st was unpacking.
func (s *scheduler) leave(st *itemState, to phase) bool {
	if st.phase != unpacking {
		return false
	}
	s.held -= st.it.info.NarSize
	st.phase = to
	return true
}

// stage records that st's NAR is unpacked as x. It returns true if x is
// to be committed now; otherwise st keeps it until its last reference is
// committed (see committed).
func (s *scheduler) stage(st *itemState, x staged) (commitNow bool) {
	if s.refsValid(st.it) {
		return true
	}
	st.staged = x
	return false
}

// commitJob is a staged NAR whose references are all valid.
type commitJob struct {
	st *itemState
	x  staged
}

// committed records that st is valid and returns the staged referrers
// that this made committable.
func (s *scheduler) committed(st *itemState) (next []commitJob) {
	s.leave(st, committed)
	st.it.valid = true
	s.pathsDone++
	for _, r := range s.referrers[st.it.info.Path.Hash] {
		if r.staged != nil && s.refsValid(r.it) {
			next = append(next, commitJob{r, r.staged})
			r.staged = nil
		}
	}
	return next
}

// refsValid says whether every reference of it in the plan is valid.
func (s *scheduler) refsValid(it *item) bool {
	for _, ref := range it.info.References {
		if dep, ok := s.plan.byHash[ref.Hash]; ok && dep != it && !dep.valid {
			return false
		}
	}
	return true
}

// addReferrer records st as a referrer of its references in the plan.
func (s *scheduler) addReferrer(st *itemState) {
	for _, ref := range st.it.info.References {
		if dep, ok := s.plan.byHash[ref.Hash]; ok && dep != st.it && !slices.Contains(s.referrers[ref.Hash], st) {
			s.referrers[ref.Hash] = append(s.referrers[ref.Hash], st)
		}
	}
}

// abandon gives up the chunks of st's current description still wanted:
// its last chunks must not make it look complete meanwhile. An item whose
// NAR proved its description a lie moves from unpacking to redescribing.
func (s *scheduler) abandon(st *itemState) {
	s.leave(st, redescribing)
	for _, w := range st.wants {
		s.dequeue(w)
		w.done = true
	}
	st.desc++ // its wants are abandoned
}

// redescribe puts st's item under a fresh description: the chunks of the
// old one still wanted are abandoned, and what peers lacked of it is
// forgotten (they lacked chunks of the old index). The caller removes the
// old spool and resets st (reset) once it has looked at the new one.
func (s *scheduler) redescribe(st *itemState, fresh *item) (old *spool) {
	s.abandon(st)
	it := st.it
	for _, ps := range s.peers {
		delete(ps.lacks, it.info.Path.Hash)
		delete(ps.chunks, it.info.Path.Hash) // positions in the old index
	}
	it.info, it.index, it.offs, it.infoFrom, it.providers = fresh.info, fresh.index, fresh.offs, fresh.infoFrom, fresh.providers
	s.addReferrer(st)
	return st.spool
}

// finish ends the transfer with err (if it has not ended yet) and returns
// the staged trees never committed (a reference failed), to discard.
func (s *scheduler) finish(err error) (discard []staged) {
	s.fail(err)
	for _, st := range s.items {
		if st.staged != nil {
			discard = append(discard, st.staged)
			st.staged = nil
		}
	}
	return discard
}
