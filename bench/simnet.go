package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// The sim's network model. go-libp2p's mocknet joins hosts with in-memory
// streams; its own bandwidth limit is per link (per pair of hosts), which
// would let a seeder send to 500 followers at 500 times its rate. A room
// is machines on one switch, each with one port: what a machine sends
// shares its uplink, what it receives shares its downlink. So each
// simulated machine has a nic, and every write on a stream takes the
// later of two slots: one on the sender's uplink and one on the
// receiver's downlink, each a FIFO queue serialising bytes at the link
// rate. No latency, loss or TCP dynamics are modelled: on a LAN the
// transfer is bound by the links' rates, which is what the sim measures.
//
// Only the chunks protocol, which carries the store's bytes, is paced.
// The sim's links are many times slower than a real LAN's, so that the
// traffic of hundreds of machines fits in this machine's CPUs; trove's
// own timeouts (a have or info round trip has 30 s) are not slowed down
// with them, and the small messages of the other protocols (have, info,
// announcements) would time out behind bulk data where a real link
// carries them in milliseconds. They cross the sim at once, and are
// counted like every byte sent.

// nic is one simulated machine's network port.
type nic struct {
	up, down pacer
	sent     atomic.Int64 // bytes its streams wrote, every protocol
	chunks   atomic.Int64 // ... of them, the chunks protocol's (paced)
}

func newNIC(rate float64) *nic {
	return &nic{up: pacer{rate: rate}, down: pacer{rate: rate}}
}

// pacer serialises bytes at rate (bytes per second), first come first
// served.
type pacer struct {
	rate float64
	mu   sync.Mutex
	next time.Time // when the bytes already queued have gone
}

// reserve queues n bytes at now and returns when they have gone.
func (p *pacer) reserve(now time.Time, n int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	return p.next
}

// simRoom maps peers to their NICs, for the streams to find the receiver's.
type simRoom struct {
	mu   sync.RWMutex
	nics map[peer.ID]*nic
}

func (r *simRoom) nic(p peer.ID) *nic {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.nics[p]
}

// shapedHost is a mocknet host whose streams (opened or accepted) are
// paced through the NICs of their two ends and counted.
type shapedHost struct {
	host.Host
	room  *simRoom
	nic   *nic
	paced []protocol.ID
}

// wrap counts what s sends, and paces it when it speaks one of the paced
// protocols.
func (h *shapedHost) wrap(s network.Stream, pids ...protocol.ID) network.Stream {
	w := &shapedStream{Stream: s, from: h.nic}
	if slices.ContainsFunc(pids, func(p protocol.ID) bool { return slices.Contains(h.paced, p) }) {
		w.to = h.room.nic(s.Conn().RemotePeer())
	}
	return w
}

func (h *shapedHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return h.wrap(s, pids...), nil
}

func (h *shapedHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) { handler(h.wrap(s, pid)) })
}

func (h *shapedHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, m, func(s network.Stream) { handler(h.wrap(s, pid)) })
}

// shapedStream counts what is written on it, and paces it through the
// sender's uplink and the receiver's downlink when to is set.
type shapedStream struct {
	network.Stream
	from, to *nic
}

// slice is the most a write holds a link for at once, so streams sharing
// a link interleave as packets of TCP connections would.
const slice = 16 << 10

func (s *shapedStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), slice)
		if s.to != nil {
			now := time.Now()
			until := s.from.up.reserve(now, n)
			if d := s.to.down.reserve(now, n); d.After(until) {
				until = d
			}
			if wait := time.Until(until); wait > 0 {
				time.Sleep(wait)
			}
		}
		// Counted before the write, and corrected after: the receiver
		// may read the bytes (and its sync end) before Write returns, and
		// a room is measured once every sync has ended.
		s.count(n)
		m, err := s.Stream.Write(p[:n])
		written += m
		s.count(m - n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// count adds n bytes to what the sender sent, and to its chunk bytes when
// the stream is paced.
func (s *shapedStream) count(n int) {
	s.from.sent.Add(int64(n))
	if s.to != nil {
		s.from.chunks.Add(int64(n))
	}
}
