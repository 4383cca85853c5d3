package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
)

// A room of followers fetching the same closure asks the one seeder for
// the same chunks: each follower learns what the others hold only once
// they hold it, so two of them often ask for a chunk at about the same
// time; and once the seeder has sent a follower everything nobody else
// holds, followers ask it for what others hold, since it answers fastest.
// Served as asked, the seeder's link carries each chunk several times
// (2–6× the closure), while the followers' links, which could carry
// those copies, wait.
//
// So a node that only serves (it fetches nothing itself: a seeder, or a
// follower done) sends each chunk once, as BitTorrent's super-seeding
// does. A request that says it may be deferred (ChunkRequest.Defer: the
// asker fetches in a swarm and hears what its peers hold) for a chunk
// this node sent to another peer still connected is answered Later: that
// peer has it, or is about to, and will say so; ask it, or, if nobody
// else can be asked by the time given, ask here again without Defer,
// which is always served. A node that is fetching serves whatever it is
// asked and remembers none of it: its upload is what a room runs on.
// The decision rests on what the node actually sent, not on what it
// offered, and costs one entry per chunk sent.

// A node also serves at most uploadSlots peers at a time (BitTorrent's
// unchoked peers): a follower holding a chunk its 16 neighbours want, serving
// them all at once, gets it to each only after 16 chunk times, and none
// can pass it on sooner; served two at a time, the first two have it
// after two, and the chunk spreads. (Two, not BitTorrent's four: with
// each follower keeping few requests out (fetch's swarmFlight), the
// simulated room of 64 took 1.8× one follower's time with four slots
// and 1.5–1.6× with two, and one slot left uplinks idle between
// batches.) A request that allows deferral from a
// peer without a slot while every slot is taken is answered Later with
// Busy: ask elsewhere, or here again after the time given. A slot is held
// while one of the peer's chunks streams is being answered.
//
// A peer told every slot is taken may ask again about when one is free
// (slots.wait): how long a peer has held a slot here lately, over the
// number of slots. A slot serves a batch of a few chunks in a swarm, so
// that is about a chunk time whatever the link. Until a slot has been
// given back, and at most, it is busyAfter (stretched by
// Config.TimeScale). A fixed 250 ms was fifty chunk times on 100 Mbit/s:
// a room whose last chunks were held by a few busy peers waited that
// long at each hop.
const (
	uploadSlots = 2
	busyAfter   = 250 * time.Millisecond
)

// deferral is an answer Later: ask again after after, for the chunk went
// to peer to (get it there), or every slot is taken (busy).
type deferral struct {
	after time.Duration
	to    peer.ID
	busy  bool
}

// slots are the peers being served now, and how long a peer held a slot
// on average.
type slots struct {
	mu      sync.Mutex
	serving map[peer.ID]holder
	held    time.Duration
}

// holder is a peer holding a slot: how many of its streams hold it, and
// since when.
type holder struct {
	streams int
	since   time.Time
}

// wait is how long to tell a peer to wait for a slot, at most most.
func (s *slots) wait(most time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held <= 0 {
		return most
	}
	return min(most, max(time.Millisecond, s.held/uploadSlots))
}

// slot is one chunks stream's claim on a slot.
type slot struct {
	s            *slots
	p            peer.ID
	held, closed bool
	mu           sync.Mutex
}

// take says whether the stream may send p data now: it holds a slot, or
// gets one (p is served already, or a slot is free).
func (sl *slot) take() bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.held || sl.closed {
		return sl.held
	}
	sl.s.mu.Lock()
	defer sl.s.mu.Unlock()
	if sl.s.serving == nil {
		sl.s.serving = map[peer.ID]holder{}
	}
	h, ok := sl.s.serving[sl.p]
	if !ok {
		if len(sl.s.serving) >= uploadSlots {
			return false
		}
		h.since = time.Now()
	}
	h.streams++
	sl.s.serving[sl.p] = h
	sl.held = true
	return true
}

// close gives the slot back, if the stream held one.
func (sl *slot) close() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.closed = true
	if !sl.held {
		return
	}
	sl.held = false
	sl.s.mu.Lock()
	defer sl.s.mu.Unlock()
	h := sl.s.serving[sl.p]
	if h.streams--; h.streams > 0 {
		sl.s.serving[sl.p] = h
		return
	}
	delete(sl.s.serving, sl.p)
	if d := time.Since(h.since); sl.s.held <= 0 {
		sl.s.held = d
	} else {
		sl.s.held += (d - sl.s.held) / 8
	}
}

// serveWindow is about how long a chunk takes to reach the peer it was
// sent to and for that peer to say it holds it, on a LAN (sized when
// haves were coalesced for 100 ms; now 5 ms, haves.go): an asker
// deferred in that time is told to wait the rest of it; one deferred
// later, laterAfter. Both grow by how long
// answers have been waiting here to be sent (a slow or shared link
// queues them), and by Config.TimeScale.
const (
	serveWindow = 2 * time.Second
	laterAfter  = 500 * time.Millisecond
)

// maxServeAge is how long a node remembers a chunk it sent: the peer it
// went to may have collected it since. maxLater is the longest it tells
// an asker to wait. Both grow by Config.TimeScale.
const (
	maxServeAge = time.Minute
	maxLater    = 10 * time.Second
)

// maxServes bounds what a node remembers of what it sent: 64 Ki chunks
// of 64 KiB on average is 4 GiB, five minutes of a 100 Mbit/s link at
// full speed. Past it, chunks are served without being remembered (and
// so never deferred) until old ones are forgotten.
const maxServes = 1 << 16

// serves remembers, for each chunk sent in the last maxServeAge while not
// fetching, to whom and when.
type serves struct {
	mu    sync.Mutex
	m     map[chunk.ID]served
	scale float64       // Config.TimeScale
	queue time.Duration // how long answers wait here to be sent, on average
}

type served struct {
	to peer.ID
	at time.Time
}

// claim decides whether p, asking for id at now, is answered with the
// chunk (later 0) or told to ask again after later, and to get it from
// to, the peer it was sent to. Only a request that may be deferred is,
// and only while that peer is still connected (connected says). A chunk
// answered is recorded as sent to p at now if record says so; call undo
// if it is not sent after all, sent once it is.
func (s *serves) claim(p peer.ID, id chunk.ID, mayDefer, record bool, now time.Time, connected func(peer.ID) bool) (later time.Duration, to peer.ID, undo func()) {
	s.mu.Lock()
	e, ok := s.m[id]
	window, after := s.stretch(serveWindow)+2*s.queue, s.stretch(laterAfter)+s.queue
	s.mu.Unlock()
	if ok && mayDefer && e.to != p {
		if age := now.Sub(e.at); age < s.stretch(maxServeAge) && connected(e.to) {
			return min(max(window-age, after), s.stretch(maxLater)), e.to, nil
		}
	}
	if !record {
		return 0, "", func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[chunk.ID]served{}
	}
	if len(s.m) >= maxServes {
		for k, e := range s.m {
			if now.Sub(e.at) >= s.stretch(maxServeAge) {
				delete(s.m, k)
			}
		}
	}
	prev, had := s.m[id]
	if len(s.m) >= maxServes && !had {
		return 0, "", func() {}
	}
	rec := served{to: p, at: now}
	s.m[id] = rec
	return 0, "", func() { s.undo(id, rec, prev, had) }
}

// stretch scales d by Config.TimeScale.
func (s *serves) stretch(d time.Duration) time.Duration {
	return time.Duration(max(1, s.scale) * float64(d))
}

// stretch scales d by Config.TimeScale: every wait of the node that is
// counted in chunk times on a real link (this file, haves.go).
func (n *Node) stretch(d time.Duration) time.Duration { return n.serves.stretch(d) }

// sent records that the chunk id claimed for p went out at now: the
// window starts when it leaves, not when it was read (it may wait behind
// others for a slow link).
func (s *serves) sent(p peer.ID, id chunk.ID, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok && e.to == p {
		s.queue += (now.Sub(e.at) - s.queue) / 8
		s.m[id] = served{to: p, at: now}
	}
}

// undo forgets the claim rec of id, putting back what it replaced.
func (s *serves) undo(id chunk.ID, rec, prev served, had bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[id] == rec {
		if had {
			s.m[id] = prev
		} else {
			delete(s.m, id)
		}
	}
}
