package p2p

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
)

// A room of followers fetching the same closure asks the one seeder for
// the same chunks: each follower learns what the others hold only once
// they hold it, so two of them often ask for a chunk at about the same
// time, and at the end of a sync every follower asks the seeder for what
// it still lacks. Served as asked, the seeder's link carries each chunk
// several times (2–6× the closure), and the room waits on it.
//
// So a server sends a chunk to one asker per serveWindow. A request that
// says it may be deferred (ChunkRequest.Defer: the asker fetches in a
// swarm and hears what its peers hold) for a chunk this node sent to
// another connected peer less than serveWindow ago is answered Later:
// that peer has it, or is about to, and will say so; ask it, or ask here
// again after the time given. This is BitTorrent's super-seeding decided
// by the server, on what it actually sent rather than on what it offered,
// and it needs no more state than one entry per chunk sent in the window.

// serveWindow is how long after sending a chunk to one peer a server
// defers others asking for it: long enough for the chunk to cross a
// loaded LAN link and for its receiver to say it holds it (its haves are
// coalesced for 100 ms), short enough that an asker who cannot reach that
// receiver waits little.
const serveWindow = 2 * time.Second

// maxServes bounds what a node remembers of its recent serves: 64 Ki
// chunks of 64 KiB on average is 4 GiB sent in one serveWindow, more
// than any link here carries; past it, chunks are served without being
// remembered (and so never deferred).
const maxServes = 1 << 16

// serves remembers, for each chunk sent in the last serveWindow, to whom
// and when.
type serves struct {
	mu sync.Mutex
	m  map[chunk.ID]served
}

type served struct {
	to peer.ID
	at time.Time
}

// claim decides whether p, asking for id at now, is answered with the
// chunk (later 0: it is recorded as sent to p at now; call undo if it is
// not sent after all, sent once it is) or told to ask again after later.
// Only a request that may be deferred is, and only while the peer it was
// sent to is still connected (connected says).
func (s *serves) claim(p peer.ID, id chunk.ID, mayDefer bool, now time.Time, connected func(peer.ID) bool) (later time.Duration, undo func()) {
	s.mu.Lock()
	e, ok := s.m[id]
	s.mu.Unlock()
	if ok && mayDefer && e.to != p {
		if age := now.Sub(e.at); age < serveWindow && connected(e.to) {
			return serveWindow - age, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[chunk.ID]served{}
	}
	if len(s.m) >= maxServes {
		for k, e := range s.m {
			if now.Sub(e.at) >= serveWindow {
				delete(s.m, k)
			}
		}
	}
	prev, had := s.m[id]
	if had && mayDefer && os.Getenv("TROVE_DEBUG_SERVES") != "" {
		fmt.Fprintf(os.Stderr, "DBG reserve to %s: age %v prevto %s same %v\n", p.ShortString(), now.Sub(prev.at), prev.to.ShortString(), prev.to == p)
	}
	if len(s.m) >= maxServes && !had {
		return 0, func() {}
	}
	rec := served{to: p, at: now}
	s.m[id] = rec
	return 0, func() { s.undo(id, rec, prev, had) }
}

// sent records that the chunk id claimed for p went out at now: the
// window starts when it leaves, not when it was read (it may wait behind
// others for a slow link).
func (s *serves) sent(p peer.ID, id chunk.ID, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok && e.to == p {
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
