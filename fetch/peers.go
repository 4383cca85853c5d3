package fetch

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/nix"
)

// peerState is what one transfer knows of one peer: how it served (its
// score for the report) and whether it may still be asked.
type peerState struct {
	id       peer.ID
	bytes    int64     // verified chunk bytes it delivered first
	first    time.Time // its first request
	last     time.Time // its last delivery
	bad      int       // bad data it sent (chunks, or a lying chunk index)
	dropped  string    // why it was dropped for this transfer; "" while it may be asked
	failures int       // failed batches, other than bad data and stalls
	lacks    map[nix.PathHash]bool
	streams  int // workers started for it
	inFlight int // chunk requests out to it (a swarm bounds their sum: flightCap)
	// chunks holds, per path it does not provide whole, a bitfield of the
	// chunks it said it holds (in have messages).
	chunks map[nix.PathHash][]byte
	misses int // advertised chunks it then did not serve
	// later holds the wants it answered Later (it sent them to another
	// peer): not asked of it again while another peer can be; insist
	// those it is asked for again because none can, without Defer.
	later, insist map[*want]bool
	// beyond is 1 + the scheduler's aheadFrom when p last answered Later:
	// it sent out what was asked of it, and until the window moves it is
	// asked for the rarest chunks anywhere, not in the window (ahead).
	beyond    int
	zstd      bool // it is asked for compressed chunks (compress)
	zstdKnown bool // ... as its measured rate decided
	// zstdSeen is p's Compressed counters (wire, raw) when this transfer
	// last decided, once zstdSeenSet: what they gained since came
	// compressed in it (scheduler.zstdGot).
	zstdSeen    [2]int64
	zstdSeenSet bool
}

// usable says whether p may still be asked for chunks of h.
func (ps *peerState) usable(h nix.PathHash) bool { return ps.dropped == "" && !ps.lacks[h] }

// peerBook holds the states of every peer a transfer has met. It is part
// of the scheduler's state and changes only through scheduler methods.
type peerBook map[peer.ID]*peerState

// get returns p's state, adding it on first sight.
func (b peerBook) get(p peer.ID) *peerState {
	ps, ok := b[p]
	if !ok {
		ps = &peerState{id: p, lacks: map[nix.PathHash]bool{}}
		b[p] = ps
	}
	return ps
}

// live counts the peers not dropped.
func (b peerBook) live() int {
	n := 0
	for _, ps := range b {
		if ps.dropped == "" {
			n++
		}
	}
	return n
}

// inFlight is how many chunk requests are out, over every peer.
func (b peerBook) inFlight() int {
	n := 0
	for _, ps := range b {
		n += ps.inFlight
	}
	return n
}

// dropped says whether p was met and dropped.
func (b peerBook) dropped(p peer.ID) bool {
	ps := b[p]
	return ps != nil && ps.dropped != ""
}
