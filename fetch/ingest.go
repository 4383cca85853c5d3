package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// The ingest stage of a transfer: it looks at spools and the store to
// decide which chunks an item still needs (prepare), unpacks items whose
// chunks are all in, commits them references first, and describes again
// an item whose description proved a lie. What to do next is the
// scheduler's decision; this file does the I/O.

// prepareAll prepares the items in order and records who refers to whom.
// On failure it lets go of the spools opened so far.
func (f *transfer) prepareAll(ctx context.Context, order []*item) error {
	for _, it := range order {
		if err := f.prepare(ctx, &itemState{it: it}); err != nil {
			f.closeSpools()
			return err
		}
	}
	s := f.lock()
	defer f.unlock()
	for _, st := range s.items {
		s.addReferrer(st)
	}
	return nil
}

// prepare opens the spool of st's item and decides which chunks must be
// fetched, (re)setting st in place.
func (f *transfer) prepare(ctx context.Context, st *itemState) error {
	f.lock()
	it := st.it
	path, size, index, offs := it.info.Path, it.info.NarSize, it.index, it.offs
	f.unlock()
	sp, fresh, err := openSpool(f.opts.SpoolDir, path, size)
	if err != nil {
		return err
	}
	// Look at the spool and the store without the lock: workers of other
	// paths keep going meanwhile (this also runs when a path restarts).
	var resumed, reused int64
	var missing []int
	// Reading back a spool left by an earlier sync takes a chunk-sized
	// buffer; a fresh one has nothing to read (a room of hundreds of
	// followers, each preparing its paths at once, spent a third of its
	// first seconds zeroing these).
	var buf []byte
	if !fresh {
		buf = make([]byte, chunk.MaxSize)
	}
	for i, c := range index {
		if !fresh && sp.has(c, offs[i], buf) {
			resumed += int64(c.Size)
			continue
		}
		if data, err := f.store.ReadChunk(ctx, c.ID, c.Size); err == nil {
			if err := sp.writeAt(data, offs[i]); err != nil {
				sp.close()
				return fmt.Errorf("writing %s: %w", sp.f.Name(), err)
			}
			reused += int64(c.Size)
			continue
		}
		missing = append(missing, i)
	}
	f.hold.start(path.Hash, sp, index, offs, missing)
	f.lock().reset(st, sp, missing, resumed, reused)
	f.unlock()
	return nil
}

// ingestLoop takes ready items until every item is valid or the transfer
// failed.
func (f *transfer) ingestLoop(ctx context.Context) error {
	for {
		st, err := f.nextIngest()
		if st == nil {
			return err
		}
		if err := f.ingest(ctx, st); err != nil {
			return err
		}
	}
}

// nextIngest waits for the scheduler to hand out an item to unpack; nil
// when none ever will, with the transfer's error unless it finished.
func (f *transfer) nextIngest() (*itemState, error) {
	s := f.lock()
	defer f.unlock()
	for {
		st, discard, stop := s.nextIngest()
		for _, x := range discard {
			x.Discard()
		}
		switch {
		case st != nil:
			return st, nil
		case stop && (s.err == nil || errors.Is(s.err, errFinished)):
			return nil, nil
		case stop:
			return nil, s.err
		}
		if len(discard) > 0 {
			f.cond.Broadcast() // evicted items are ready again
		}
		f.wait()
	}
}

// ingest unpacks an item whose chunks are all in and commits it (or hands
// it to whoever commits its last reference). A NAR that does not hash to
// the believed narHash means the peer that described it (its chunk index)
// lied: it is dropped and the item is fetched again by another peer's
// description; so is a stale item, whose describer was dropped while its
// chunks are still missing.
func (f *transfer) ingest(ctx context.Context, st *itemState) error {
	s := f.lock()
	it, sp := st.it, st.spool
	info := *it.info
	if st.phase == redescribing {
		from, others := it.infoFrom, s.others(it)
		why, where := s.peers.get(from).dropped, info.Path.Abs(s.storeDir)
		s.abandon(st) // its last chunks must not make it look complete meanwhile
		f.unlock()
		fresh, berr := f.believe(ctx, info.Path, others)
		if berr != nil {
			return fmt.Errorf("peer %s, which described %s, was dropped (%s), and no other peer gives a usable description: %w",
				from, where, why, berr)
		}
		return f.restart(ctx, st, fresh)
	}
	streamed, desc := s.streamed == st, st.desc
	var r io.Reader = sp.reader()
	if streamed {
		r = &streamReader{f: f, st: st, desc: desc, sp: sp, size: info.NarSize}
	}
	f.unlock()
	x, err := f.store.StageNAR(ctx, &info, it.index, r)
	if streamed {
		complete := f.lock().streamEnded(st, desc, err != nil)
		f.unlock()
		if !complete {
			// Given up (the item was orphaned, the transfer ended), or
			// failed before every chunk was in: the failure may be of
			// the stream, not of the NAR, so it is judged by the ordinary
			// unpacking once the item is complete.
			if x != nil {
				x.Discard()
			}
			return nil
		}
	}
	if err == nil {
		return f.commit(st, x)
	}
	if !errors.Is(err, nix.ErrHashMismatch) && !errors.Is(err, nix.ErrBadNAR) || it.attempts >= 2 {
		return err
	}
	it.attempts++
	// The chunks matched the index, so the index (or the info) lied.
	liar := it.infoFrom
	why := "described " + info.Path.String() + " with a chunk index that does not produce its NAR"
	s = f.lock()
	droppedNow := s.lied(liar, why)
	others := s.others(it)
	f.unlock()
	if droppedNow {
		f.log.Warn("dropping peer for this sync", "peer", liar, "reason", why)
	}
	fresh, berr := f.believe(ctx, info.Path, others)
	if berr != nil {
		return fmt.Errorf("peer %s %s (%w); and no other peer gives a usable description: %v", liar, why, err, berr)
	}
	return f.restart(ctx, st, fresh)
}

// commit makes st's staged NAR valid if its references are, then every
// staged referrer whose references have all become valid, and so on; a
// staged item whose references are not all valid waits for the commit of
// the last of them.
func (f *transfer) commit(st *itemState, x staged) error {
	now := f.lock().stage(st, x)
	f.unlock()
	if !now {
		return nil
	}
	next := []commitJob{{st, x}}
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
		f.hold.forget(j.st.it.info.Path.Hash)
		j.st.spool.remove()
		if f.haves != nil {
			f.haves.Gained(j.st.it.info.Path.Hash) // valid now: subscribers hear All
		}
		next = append(next, f.lock().committed(j.st)...)
		f.unlock()
	}
	return nil
}

// restart fetches an item again under a new description.
func (f *transfer) restart(ctx context.Context, st *itemState, fresh *item) error {
	old := f.lock().redescribe(st, fresh)
	f.unlock()
	old.remove()
	if err := f.prepare(ctx, st); err != nil {
		return err
	}
	if f.haves != nil {
		// Subscribers hear the path's chunks held anew: what they were
		// told went with the old spool, and a peer that believes this
		// one holds a chunk is not told when it gains it again.
		f.haves.Gained(st.it.info.Path.Hash)
	}
	return nil
}

// closeSpools lets go of the spools of the items not committed, once
// nothing writes to them any more: they stay on disk for the next sync to
// resume from, and for trove gc to remove if none does.
func (f *transfer) closeSpools() {
	s := f.lock()
	defer f.unlock()
	for _, st := range s.items {
		if st.spool != nil && !st.it.valid {
			st.spool.close()
		}
	}
}

// errStreamGone ends a streamed unpacking whose item or transfer went on
// without it.
var errStreamGone = errors.New("the item being unpacked while fetched was given up")

// streamReader reads an item's spool as its chunks arrive: the NAR's
// bytes in order, each once every chunk up to it is in, waiting for the
// next chunk as needed. Every chunk was verified before it was written,
// and the unpacking checks the narHash as for any NAR.
type streamReader struct {
	f    *transfer
	st   *itemState
	desc int
	sp   *spool
	off  uint64
	size uint64
}

func (r *streamReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	s := r.f.lock()
	for s.err == nil && s.streaming(r.st, r.desc) && r.st.prefix() <= r.off {
		r.f.wait()
	}
	if s.err != nil || !s.streaming(r.st, r.desc) {
		r.f.unlockQuiet()
		return 0, errStreamGone
	}
	n := min(uint64(len(p)), r.st.prefix()-r.off)
	r.f.unlockQuiet()
	m, err := r.sp.f.ReadAt(p[:n], int64(r.off))
	r.off += uint64(m)
	if err == io.EOF && m > 0 {
		err = nil
	}
	return m, err
}
