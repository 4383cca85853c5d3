package fetch

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// The I/O side of swarming: a transfer serves the verified chunks in its
// spools to peers (holdings, a p2p.Partial the node consults for chunks
// its store lacks), tells the peers subscribed to its paths what it gains
// (p2p.Node.Gained), and subscribes to what the peers it follows hold of
// the paths it fetches (follow), feeding the scheduler (scheduler.haves).

// holdings are the chunks of a transfer that are verified and in a spool:
// a chunk is added once its bytes are written (or found there on resume,
// or copied from the store), and a path's go when its spool does. Its own
// lock, not the transfer's: peers read chunks while workers deliver.
type holdings struct {
	mu     sync.RWMutex
	chunks map[chunk.ID]spot
	paths  map[nix.PathHash]*held
}

// spot is where a held chunk lies.
type spot struct {
	sp  *spool
	off uint64
}

// held is what is held of one path: a bitfield over its chunk index.
type held struct {
	sp   *spool
	bits []byte
	ids  []chunk.ID // the chunk at each position, to forget them
}

var _ p2p.Partial = (*holdings)(nil)

func newHoldings() *holdings {
	return &holdings{chunks: map[chunk.ID]spot{}, paths: map[nix.PathHash]*held{}}
}

// start begins holding h, whose spool is sp, with the chunks of index at
// positions have already in it; anything held of h before goes.
func (ho *holdings) start(h nix.PathHash, sp *spool, index chunk.Index, offs []uint64, missing []int) {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	ho.forgetLocked(h)
	hd := &held{sp: sp, bits: make([]byte, (len(index)+7)/8), ids: make([]chunk.ID, len(index))}
	for i, c := range index {
		hd.ids[i] = c.ID
	}
	m := 0
	for i := range index {
		if m < len(missing) && missing[m] == i {
			m++
			continue
		}
		setBit(hd.bits, i)
		ho.chunks[index[i].ID] = spot{sp, offs[i]}
	}
	ho.paths[h] = hd
}

// add holds the chunk at position i of h, written at off in its spool.
func (ho *holdings) add(h nix.PathHash, i int, id chunk.ID, off uint64) {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	hd := ho.paths[h]
	if hd == nil || i >= len(hd.ids) || hd.ids[i] != id {
		return // h was described again meanwhile
	}
	setBit(hd.bits, i)
	ho.chunks[id] = spot{hd.sp, off}
}

// forget stops serving h's chunks from its spool (it is committed, and
// in the store, or its spool goes).
func (ho *holdings) forget(h nix.PathHash) {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	ho.forgetLocked(h)
}

func (ho *holdings) forgetLocked(h nix.PathHash) {
	hd := ho.paths[h]
	if hd == nil {
		return
	}
	for i, id := range hd.ids {
		if bit(hd.bits, i) && ho.chunks[id].sp == hd.sp {
			delete(ho.chunks, id)
		}
	}
	delete(ho.paths, h)
}

// ReadChunk reads a held chunk from its spool. It does not hash it again,
// just as the store does not hash what it serves from its trees
// (store.Store.ChunkData): every chunk held was verified before it was
// written, or found whole in the spool on resume, or read verified from
// the store, and the peer asking verifies it on arrival. Hashing here
// too cost a room of followers about 2.5% of its CPU. A spool that went
// (committed, or started over) is closed, and reading it fails.
func (ho *holdings) ReadChunk(ctx context.Context, id chunk.ID, size uint32, dst []byte) ([]byte, error) {
	ho.mu.RLock()
	at, ok := ho.chunks[id]
	ho.mu.RUnlock()
	if !ok || int(size) > len(dst) {
		return nil, errNotHeld
	}
	b := dst[:size]
	if _, err := at.sp.f.ReadAt(b, int64(at.off)); err != nil {
		return nil, err // the spool went: the path committed or restarted
	}
	return b, nil
}

// Holds returns what is held of h.
func (ho *holdings) Holds(h nix.PathHash) ([]byte, bool) {
	ho.mu.RLock()
	defer ho.mu.RUnlock()
	hd := ho.paths[h]
	if hd == nil {
		return nil, false
	}
	return slices.Clone(hd.bits), true
}

var errNotHeld = errors.New("chunk not held")

// heard applies one have message of p's subscription to paths, and
// starts a worker for each peer it makes one for. It wakes only p's
// workers, unless the message dropped p or made the transfer a swarm.
func (f *transfer) heard(p peer.ID, paths []nix.PathHash, msg *p2p.Haves) error {
	s := f.lock()
	swarm := s.swarm
	start, err := s.haves(p, paths, msg)
	why := ""
	if err != nil {
		why = s.peers.get(p).dropped
	}
	if err != nil || s.swarm != swarm {
		f.unlock()
	} else {
		f.unlockAsking(p) // only p holds more
	}
	if why != "" {
		f.log.Warn("dropping peer for this sync", "peer", p, "reason", why)
	}
	for _, q := range start {
		f.spawn(q)
	}
	return err
}

// watchEvery is how often a running fetch looks for connected peers it
// has not subscribed to yet, and asks those that do not speak the haves
// protocol (by path, with have) which unfinished paths they hold.
var watchEvery = 500 * time.Millisecond

// subscribe follows what p holds of paths until ctx ends (the transfer
// ends, p makes way for another, the paths followed move on) or p goes;
// it reports whether p speaks the protocol.
func (f *transfer) subscribe(ctx context.Context, p peer.ID, paths []nix.PathHash) (spoke bool) {
	err := f.haves.SubscribeHaves(ctx, p, paths, func(msg *p2p.Haves) error {
		spoke = true
		return f.heard(p, paths, msg)
	})
	if err != nil && ctx.Err() == nil {
		f.log.Debug("haves subscription ended", "peer", p, "err", err)
		if errors.Is(err, p2p.ErrProtocol) {
			s := f.lock()
			droppedNow := s.dropPeer(p, err.Error())
			s.peers.get(p).bad++
			f.unlock()
			if droppedNow {
				f.log.Warn("dropping peer for this sync", "peer", p, "reason", err.Error())
			}
		}
	}
	return spoke
}

// swarmFollow is how many peers a fetch follows (subscribes to what they
// hold, and so asks for chunks) besides those that hold whole paths it
// fetches (seeders, always followed): chosen at random among the
// connected ones, as a BitTorrent client works with a few peers of a
// swarm, not every one. Each peer followed costs both ends a have message
// per chunk or two it gains and a worker asking it, and in a room every
// member gains all the time: in the fanout (16 followers sharing two
// cores) a follower that followed all 15 others took 1.44–1.57× one
// follower's time, following 4 1.25× (DESIGN.md, Limits).
//
// A seeder that answers Later names the peer it sent the chunk to
// (p2p.LaterError.To), and a fetch follows that peer too, as a
// super-seeding BitTorrent seeder points its peers to the one it gave a
// piece: up to swarmPointed such peers at a time, the one pointed to
// longest ago making way for a new one once it has been followed
// pointedFor. Without them, a chunk the seeder sent to a peer not
// followed waited the whole Later time and was then sent again: the
// sim's room of 256 took 3.6× one follower's time.
var (
	swarmFollow  = 4
	swarmPointed = 4
	pointedFor   = 250 * time.Millisecond
)

// watchMax is the most paths a transfer follows at once: what one
// subscription carries (p2p.MaxHaveHashes).
var watchMax = p2p.MaxHaveHashes

// following is what relocate knows of its subscriptions.
type following struct {
	mu   sync.Mutex
	subs map[peer.ID]*sub
	// paths are the paths every subscription asks about (watched, to
	// look up): the first watchMax of the fetch order still missing
	// chunks when rewatch last moved them.
	paths   []nix.PathHash
	watched map[nix.PathHash]bool
}

// rewatch moves the paths followed on to the first watchMax still
// missing chunks, in fetch order, once at most half of those followed
// still miss any and some path that does is not followed; it reports
// whether they moved. A pick takes chunks from the front of the fetch
// order (at most pickScan candidates), so the paths followed are those
// it asks for now and next, and a closure of any size is swarmed chunk
// by chunk with subscriptions of a bounded size. Until they moved on
// (before 2026-12-05) a transfer followed the plan's first watchMax paths
// for its whole length, and the rest of a bigger closure (a desktop
// NixOS system has 3,000 to 5,000) was fetched whole, the fetch order's
// random start often among them, with every connected peer asked about
// each of them twice a second.
func (fw *following) rewatch(s *scheduler) bool {
	if len(fw.paths) > 0 && len(fw.paths) == len(s.order) {
		return false // the whole closure is followed
	}
	open := 0
	for _, h := range fw.paths {
		if st := s.items[h]; st != nil && st.left > 0 {
			open++
		}
	}
	if len(fw.paths) > 0 && open > len(fw.paths)/2 {
		return false
	}
	var next []nix.PathHash
	news := false
	for _, st := range s.order {
		if st.left == 0 {
			continue
		}
		h := st.it.info.Path.Hash
		next = append(next, h)
		news = news || !fw.watched[h]
		if len(next) == watchMax {
			break
		}
	}
	if !news {
		return false
	}
	fw.paths = next
	fw.watched = make(map[nix.PathHash]bool, len(next))
	for _, h := range next {
		fw.watched[h] = true
	}
	return true
}

// sub is one peer followed.
type sub struct {
	legacy  bool // its subscription ended without a word: it does not speak haves
	pointed bool // counted against swarmPointed, not swarmFollow (while it holds no whole path)
	since   time.Time
	cancel  context.CancelFunc
}

// follow subscribes to the connected peers not followed yet that it may
// (swarmFollow and swarmPointed, unless the scheduler asked to follow
// all), and returns those that do not speak haves. Once a capped
// transfer follows every peer, it judges again whether every missing
// chunk can still be had (checkProviders).
func (f *transfer) follow(ctx context.Context, workers *sync.WaitGroup, fw *following) (legacy []peer.ID) {
	conn := f.haves.ConnectedPeers()
	rand.Shuffle(len(conn), func(i, j int) { conn[i], conn[j] = conn[j], conn[i] })
	isConn := make(map[peer.ID]bool, len(conn))
	for _, p := range conn {
		isConn[p] = true
	}
	now := time.Now()
	started := map[peer.ID]*sub{}
	s := f.lock()
	whole := s.wholeHolders()
	fw.mu.Lock()
	// Paths followed that moved on are asked about anew of every peer
	// followed (a subscription's paths are fixed); they are not counted
	// as started, which would make a capped transfer judge again.
	restarted := map[peer.ID]*sub{}
	if fw.rewatch(s) {
		for p, sb := range fw.subs {
			if sb.legacy {
				continue
			}
			sb.cancel()
			nsb := &sub{pointed: sb.pointed, since: sb.since}
			fw.subs[p] = nsb
			restarted[p] = nsb
		}
	}
	// A peer followed that now holds a path of the plan whole (it
	// committed one before this transfer did) counts as a seeder, and
	// its place goes to another: a follower behind its room comes to
	// follow more of it as the room commits paths.
	counted := func(pointed bool) (n int, oldest peer.ID) {
		for p, sb := range fw.subs {
			if sb.legacy || sb.pointed != pointed || s.peers.dropped(p) || whole[p] {
				continue
			}
			if n++; oldest == "" || sb.since.Before(fw.subs[oldest].since) {
				oldest = p
			}
		}
		return n, oldest
	}
	free := func(p peer.ID) bool {
		_, known := fw.subs[p]
		return !known && !s.peers.dropped(p) && !whole[p]
	}
	start := func(p peer.ID, pointed bool) {
		sb := &sub{pointed: pointed, since: now}
		fw.subs[p] = sb
		started[p] = sb
	}
	// The peers pointed to, newest first. One not connected here (a large
	// room is not a complete graph) still says that the chunk spreads
	// elsewhere: a connected peer at random is followed in its place, so
	// that the asker sees more of the room.
	pointed := s.pointed
	s.pointed = nil
	instead := 0 // conn before it has been looked at for a stand-in
	n, oldest := counted(true)
	for i := len(pointed) - 1; i >= 0; i-- {
		p := pointed[i]
		for ; !isConn[p] && instead < len(conn); instead++ {
			if free(conn[instead]) {
				p = conn[instead]
			}
		}
		if !isConn[p] || !free(p) {
			continue
		}
		if n >= swarmPointed {
			if oldest == "" || started[oldest] != nil || now.Sub(fw.subs[oldest].since) < pointedFor {
				s.pointed = pointed[:i+1] // followed at the next tick
				break
			}
			fw.subs[oldest].cancel()
			delete(fw.subs, oldest)
			n--
		}
		start(p, true)
		n++
		_, oldest = counted(true)
	}
	n, _ = counted(false)
	skipped := false
	for _, p := range conn {
		sb, known := fw.subs[p]
		switch {
		case known && sb.legacy:
			legacy = append(legacy, p)
		case known, s.peers.dropped(p):
		case !whole[p] && !s.followAll && n >= swarmFollow:
			skipped = true
		default:
			start(p, false)
			if !whole[p] {
				n++
			}
		}
	}
	// Following all, it judges again a tick after the last peer it
	// started to follow: their first answers are in by then (a peer that
	// holds none of the paths says nothing).
	was := s.capped
	s.capped = skipped || s.followAll && len(started) > 0
	maps.Copy(restarted, started)
	paths := fw.paths
	for p, sb := range restarted {
		var sctx context.Context
		sctx, sb.cancel = context.WithCancel(ctx)
		workers.Add(1)
		go func() {
			defer workers.Done()
			spoke := f.subscribe(sctx, p, paths)
			sb.cancel()
			fw.mu.Lock()
			defer fw.mu.Unlock()
			// Its place goes to another. One that went away is followed
			// again if it comes back and there is room; one that does not
			// speak haves is asked for whole paths instead (relocate);
			// one that made way for another (cancelled) is gone already.
			if fw.subs[p] != sb {
				return
			}
			if spoke {
				delete(fw.subs, p)
			} else {
				sb.legacy = true
			}
		}()
	}
	fw.mu.Unlock()
	if was && !s.capped {
		s.checkProviders()
		f.unlock()
	} else {
		f.unlockQuiet()
	}
	return legacy
}

// gained tells the holdings, and the subscribed peers that do not hold
// it, that w's chunk is in its spool. The caller holds the lock.
func (f *transfer) gained(s *scheduler, w *want) {
	h := w.st.it.info.Path.Hash
	f.hold.add(h, w.i, w.ref.ID, w.off)
	f.haves.GainedChunk(h, w.i, s.holders(w.st, w.i))
}
