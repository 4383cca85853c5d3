package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// The haves protocol lets peers in the same sync tell each other which
// chunks they hold as they gain them, so a room of followers serves each
// other chunk by chunk instead of path by path (a follower serves a
// path's chunks while the path is still being fetched, from its spool).
//
// A fetcher subscribes to a peer with the paths it is fetching (at most
// MaxHaveHashes); the peer answers at once with what it holds of them
// and then pushes what it gains, coalesced, at most every havesEvery,
// until the subscriber closes the stream. Holdings are per path, at chunk
// granularity: a position in the path's chunk index (which every honest
// peer computes alike from the NAR). A whole valid path is said in one
// flag, so a seeder's answer costs a few bytes per path.

// Partial is what a fetch in progress offers peers: the chunks it has
// verified and written but not yet committed to the store. The server
// consults every registered Partial for a chunk its Content lacks, and for
// what it holds of a path a subscriber asks about.
type Partial interface {
	// ReadChunk reads the verified chunk id of size bytes into dst (at
	// least size long) if it holds it.
	ReadChunk(ctx context.Context, id chunk.ID, size uint32, dst []byte) ([]byte, error)
	// Holds returns a bitfield (bit i, LSB first, for position i of the
	// path's chunk index) of the chunks of h it holds; ok is false when h
	// is not one of its paths.
	Holds(h nix.PathHash) (bits []byte, ok bool)
}

// havesEvery is the least time between two pushes on one subscription:
// gains in between go out together. Each hop of a chunk through a room
// waits for it (a follower is asked for a chunk only once it said it has
// it), so it is about one chunk time on a 100 Mbit/s LAN (5 ms), and
// less than one on faster links, where pushes carry several gains: about
// 200 messages a second per subscriber. At 100 ms (twenty chunk
// times) the simulated room of 64, whose waits are stretched as its
// links are, took 1.74–1.81× one follower's time; at 20 ms 1.36×; at
// 5 ms 1.27–1.31× (DESIGN.md, Limits, has what it costs and what else
// was tried).
var havesEvery = 5 * time.Millisecond

// havesRecheck is how often a subscription looks again at the store for
// subscribed paths that became valid without a fetch here (imported,
// added, built by Nix); a fetch here says so itself, at once, when it
// commits (Gained).
var havesRecheck = time.Second

// Caps of the haves protocol.
const (
	// MaxHavesMsg caps one pushed message: a bitfield of a 64 GiB NAR cut
	// into minimum-size chunks (4 Mi chunks, 512 KiB) fits.
	MaxHavesMsg = 1 << 20
	// MaxHaveEntries is the most paths one pushed message speaks of.
	MaxHaveEntries = 1024
	// MaxHaveAdds is the most chunk positions one pushed message adds, in
	// all its entries; a subscription holding more gains for a path sends
	// its bitfield instead.
	MaxHaveAdds = 8192
	// HavesBurst and HavesRate bound how many messages a subscriber takes
	// from a peer: a burst, then so many a second (an honest peer pushes
	// about 1/havesEvery, 200, while it gains). A peer beyond it broke the
	// protocol. The burst is what a subscriber that stopped reading for a
	// while then reads back to back: about five seconds of an honest
	// peer's pushes (its fetch held its lock, the machine was busy).
	HavesBurst = 1024
	HavesRate  = 400
)

// HavesRequest subscribes to what the peer holds of Paths.
type HavesRequest struct {
	Paths [][]byte `cbor:"1,keyasint"` // 20-byte store path digests
}

// Haves is one push on a subscription.
type Haves struct {
	Entries []HaveEntry `cbor:"1,keyasint"`
}

// HaveEntry says what the sender holds of one subscribed path: All (the
// path is valid there), or Bits (every chunk it holds, replacing what was
// said before), or Add (chunk positions gained since).
type HaveEntry struct {
	Path uint32   `cbor:"1,keyasint"` // index into the subscription's Paths
	All  bool     `cbor:"2,keyasint,omitempty"`
	Bits []byte   `cbor:"3,keyasint,omitempty"`
	Add  []uint32 `cbor:"4,keyasint,omitempty"`
}

var (
	decHavesRequest = msgLimits(maxRequest, MaxHaveHashes+8, MaxHaveHashes)
	decHaves        = msgLimits(MaxHavesMsg, MaxHaveEntries*9+MaxHaveAdds+8, max(MaxHaveEntries, MaxHaveAdds))
)

// partials is a node's registry of fetches in progress and of the
// subscriptions it serves.
type partials struct {
	mu   sync.RWMutex
	srcs map[*Partial]Partial
	subs map[*subscription]struct{}
}

// fetching says whether a fetch runs here (a Partial is registered).
func (n *Node) fetching() bool {
	n.partial.mu.RLock()
	defer n.partial.mu.RUnlock()
	return len(n.partial.srcs) > 0
}

// AddPartial makes the chunks src holds servable to peers until remove is
// called.
func (n *Node) AddPartial(src Partial) (remove func()) {
	n.partial.mu.Lock()
	defer n.partial.mu.Unlock()
	if n.partial.srcs == nil {
		n.partial.srcs = map[*Partial]Partial{}
	}
	key := &src
	n.partial.srcs[key] = src
	return func() {
		n.partial.mu.Lock()
		delete(n.partial.srcs, key)
		n.partial.mu.Unlock()
	}
}

// Gained tells the peers subscribed to path h that what is held of it
// here changed other than by a chunk gained: it became valid (a fetch
// committed it), or its spool started over. Its entry is looked at again
// and sent whole (All, or the bitfield).
func (n *Node) Gained(h nix.PathHash) { n.gained(h, nil, nil) }

// GainedChunk tells the peers subscribed to h that the chunk at position
// i of it is verified here, except holders: peers that said they hold it
// themselves (or h whole) would only be told what they need from no one.
// In a room that is about half of every follower's gains, each a message
// to send and to read (DESIGN.md, Limits).
func (n *Node) GainedChunk(h nix.PathHash, i int, holders []peer.ID) {
	n.gained(h, []int{i}, holders)
}

func (n *Node) gained(h nix.PathHash, pos []int, except []peer.ID) {
	n.partial.mu.RLock()
	defer n.partial.mu.RUnlock()
	for sub := range n.partial.subs {
		if !slices.Contains(except, sub.peer) {
			sub.gained(h, pos)
		}
	}
}

// partialChunk reads a chunk from a fetch in progress, into a buffer of
// chunkBufs (recycled once sent).
func (n *Node) partialChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	n.partial.mu.RLock()
	srcs := make([]Partial, 0, len(n.partial.srcs))
	for _, s := range n.partial.srcs {
		srcs = append(srcs, s)
	}
	n.partial.mu.RUnlock()
	if len(srcs) == 0 {
		return nil, errNotHere
	}
	buf := chunkBufs.Get().(*[chunk.MaxSize]byte)
	for _, s := range srcs {
		if data, err := s.ReadChunk(ctx, id, size, buf[:]); err == nil {
			return data, nil
		}
	}
	chunkBufs.Put(buf)
	return nil, errNotHere
}

// partialHolds is what the registered fetches hold of h.
func (n *Node) partialHolds(h nix.PathHash) []byte {
	n.partial.mu.RLock()
	defer n.partial.mu.RUnlock()
	for _, s := range n.partial.srcs {
		if bits, ok := s.Holds(h); ok {
			return bits
		}
	}
	return nil
}

var errNotHere = errors.New("chunk not held here")

// subscription is the server's state for one subscriber: bounded by the
// paths it asked about (at most MaxHaveHashes) and MaxHaveAdds pending
// positions, charged to its stream.
type subscription struct {
	peer  peer.ID // the subscriber
	paths []nix.PathHash
	index map[nix.PathHash]int

	mu      sync.Mutex
	all     []bool // said All: nothing more to say of it
	add     map[int][]uint32
	adds    int
	full    map[int]bool // send the bitfield: gains overflowed MaxHaveAdds
	wake    chan struct{}
	pending bool
}

// subscriptionCost is what one subscription to n paths holds, charged to
// its stream's scope: its state, and a push of up to pushSmall bytes as
// built and as encoded.
func subscriptionCost(n int) int { return n*96 + MaxHaveAdds*4 + 2*pushSmall + 4<<10 }

// pushSmall is the largest push (as counted by pushHaves) sent within the
// subscription's own reservation. Almost every push in a room is a chunk
// position or two, and a reservation of its own per push (each a walk up
// the resource manager's scopes, and back) was about a tenth of what a
// push cost its sender.
const pushSmall = 4 << 10

func (sub *subscription) gained(h nix.PathHash, pos []int) {
	i, ok := sub.index[h]
	if !ok {
		return
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.all[i] {
		return
	}
	if !sub.full[i] {
		if len(pos) == 0 || sub.adds+len(pos) > MaxHaveAdds {
			sub.adds -= len(sub.add[i])
			delete(sub.add, i)
			sub.full[i] = true
		} else {
			for _, p := range pos {
				sub.add[i] = append(sub.add[i], uint32(p))
			}
			sub.adds += len(pos)
		}
	}
	sub.pending = true
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// handleHaves serves one subscription until the subscriber closes it.
func (s *server) handleHaves(ctx context.Context, st network.Stream, r *bufio.Reader) error {
	st.SetReadDeadline(time.Now().Add(s.idle))
	var req HavesRequest
	held, err := s.readRequest(ctx, st, r, maxRequest, &req)
	if err != nil {
		return err
	}
	paths, err := pathHashes(req.Paths, MaxHaveHashes)
	st.Scope().ReleaseMemory(held)
	if err != nil {
		return err
	}
	cost := subscriptionCost(len(paths))
	if err := reserveWait(ctx, st.Scope(), cost, s.memWait); err != nil {
		return fmt.Errorf("haves subscription: %w", err)
	}
	defer st.Scope().ReleaseMemory(cost)
	sub := &subscription{peer: st.Conn().RemotePeer(), paths: paths, index: make(map[nix.PathHash]int, len(paths)), all: make([]bool, len(paths)),
		add: map[int][]uint32{}, full: map[int]bool{}, wake: make(chan struct{}, 1)}
	for i, h := range paths {
		sub.index[h] = i
		sub.full[i] = true // the first push says everything
	}
	sub.pending = true
	reg := &s.node.partial
	reg.mu.Lock()
	if reg.subs == nil {
		reg.subs = map[*subscription]struct{}{}
	}
	reg.subs[sub] = struct{}{}
	reg.mu.Unlock()
	defer func() {
		reg.mu.Lock()
		delete(reg.subs, sub)
		reg.mu.Unlock()
	}()
	// The subscriber sends nothing more; its closing the stream (or a
	// reset) ends the subscription.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st.SetReadDeadline(time.Time{})
	go func() {
		defer cancel()
		var b [1]byte
		r.Read(b[:])
	}()
	var last time.Time
	var deadline writeDeadline
	coalesce := time.NewTimer(havesEvery)
	coalesce.Stop() // reset for each wait; no stale tick after Stop (Go 1.23)
	for {
		if err := s.pushHaves(ctx, st, sub, &deadline); err != nil {
			return err
		}
		last = time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-sub.wake:
		}
		// Coalesce: gains within havesEvery of the last push go together.
		if wait := s.node.stretch(havesEvery) - time.Since(last); wait > 0 {
			coalesce.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-coalesce.C:
			}
		}
	}
}

// recheck tells every subscription of the paths not said whole yet that
// are valid here now, as a fetch that commits one does (Gained):
// they are sent whole. The node runs it every havesRecheck,
// for paths that became valid otherwise (added by hand, imported). It
// looks each path up once however many peers subscribed to it: a room
// of followers subscribes to the same closure, and a Nix store answers
// each lookup through its daemon.
func (s *server) recheck() {
	reg := &s.node.partial
	reg.mu.RLock()
	unsaid := map[nix.PathHash]bool{}
	for sub := range reg.subs {
		sub.mu.Lock()
		for i, h := range sub.paths {
			if !sub.all[i] {
				unsaid[h] = true
			}
		}
		sub.mu.Unlock()
	}
	reg.mu.RUnlock()
	for h := range unsaid {
		if s.valid(h) {
			s.node.Gained(h)
		}
	}
}

// valid says whether h is in the store here.
func (s *server) valid(h nix.PathHash) bool {
	_, err := s.content.PathInfo(h)
	return err == nil
}

// pushHaves sends what sub has pending, in messages within the caps.
func (s *server) pushHaves(ctx context.Context, st network.Stream, sub *subscription, deadline *writeDeadline) error {
	sub.mu.Lock()
	if !sub.pending {
		sub.mu.Unlock()
		return nil
	}
	add, full := sub.add, sub.full
	sub.add, sub.full, sub.adds, sub.pending = map[int][]uint32{}, map[int]bool{}, 0, false
	sub.mu.Unlock()

	var msg Haves
	size, adds := 0, 0
	flush := func() error {
		if len(msg.Entries) == 0 {
			return nil
		}
		write := func() error {
			deadline.extend(st, s.write)
			return writeMsg(st, &msg)
		}
		var err error
		if size <= pushSmall {
			err = write()
		} else {
			err = s.reserve(ctx, st, 2*size+4<<10, write)
		}
		msg.Entries, size, adds = nil, 0, 0
		return err
	}
	put := func(e HaveEntry) error {
		n := 16 + len(e.Bits) + 5*len(e.Add)
		if len(msg.Entries) == MaxHaveEntries || size+n > MaxHavesMsg-1024 || adds+len(e.Add) > MaxHaveAdds {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.Entries = append(msg.Entries, e)
		size, adds = size+n, adds+len(e.Add)
		return nil
	}
	// Only the paths with something to say are looked at: a push carries
	// a chunk position or two, many times a second, and a subscription
	// may speak of thousands of paths.
	pending := slices.Collect(maps.Keys(full))
	for i := range add {
		if !full[i] {
			pending = append(pending, i)
		}
	}
	slices.Sort(pending)
	for _, i := range pending {
		h, pos := sub.paths[i], add[i]
		// Only an entry to be said whole looks at the store: a path that
		// became valid is marked so (Gained, recheck),
		// and chunks gained are pushed many times a second.
		e := HaveEntry{Path: uint32(i)}
		switch {
		case !full[i]:
			e.Add = pos
		case s.valid(h):
			e.All = true
			sub.mu.Lock()
			sub.all[i] = true
			sub.mu.Unlock()
		default:
			e.Bits = s.node.partialHolds(h)
			if len(e.Bits) == 0 {
				continue
			}
			if len(e.Bits) > MaxHavesMsg/2 {
				continue // a bitfield no subscriber could take
			}
		}
		if err := put(e); err != nil {
			return err
		}
	}
	return flush()
}

// SubscribeHaves subscribes to what p holds of paths (at most
// MaxHaveHashes) and calls got with each message p pushes, until ctx ends,
// got fails, or p breaks the protocol (an entry for a path not asked
// about, more messages than HavesBurst and HavesRate allow).
func (n *Node) SubscribeHaves(ctx context.Context, p peer.ID, paths []nix.PathHash, got func(*Haves) error) error {
	if len(paths) > MaxHaveHashes {
		paths = paths[:MaxHaveHashes]
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, _, err := n.stream(ctx, p, ProtoHaves)
	if err != nil {
		return err
	}
	defer st.Reset() // nothing to flush: a subscription ends by going
	if err := writeMsg(st, &HavesRequest{Paths: rawHashes(paths)}); err != nil {
		return fmt.Errorf("haves request to %s: %w", p, err)
	}
	// A subscription lasts the whole sync, one per peer: a small buffer
	// (a message's body is read into its own, once its size is allowed).
	r := bufio.NewReaderSize(st, 4<<10)
	tokens, last := float64(HavesBurst), time.Now()
	for {
		var msg Haves
		held, err := readMsgIn(r, MaxHavesMsg, &msg, func(n int) error {
			return reserveWait(ctx, st.Scope(), n, requestTimeout)
		})
		if err != nil {
			if held > 0 {
				st.Scope().ReleaseMemory(held)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("haves from %s: %w", p, err)
		}
		now := time.Now()
		tokens = min(HavesBurst, tokens+now.Sub(last).Seconds()*HavesRate)
		last = now
		tokens--
		if tokens < 0 {
			st.Scope().ReleaseMemory(held)
			return fmt.Errorf("%w: %s floods have messages (more than %d a second)", ErrProtocol, p, HavesRate)
		}
		if err := checkHaves(&msg, len(paths)); err != nil {
			st.Scope().ReleaseMemory(held)
			return fmt.Errorf("%w: %s %v", ErrProtocol, p, err)
		}
		err = got(&msg)
		st.Scope().ReleaseMemory(held)
		if err != nil {
			return err
		}
	}
}

// checkHaves checks a have message of a subscription to n paths against
// what the decoder's limits do not say: entries and positions per
// message, and paths subscribed to.
func checkHaves(msg *Haves, n int) error {
	if len(msg.Entries) > MaxHaveEntries {
		return fmt.Errorf("sent %d entries in one have message, at most %d", len(msg.Entries), MaxHaveEntries)
	}
	adds := 0
	for _, e := range msg.Entries {
		if int(e.Path) >= n {
			return fmt.Errorf("speaks of path %d of a subscription to %d", e.Path, n)
		}
		adds += len(e.Add)
	}
	if adds > MaxHaveAdds {
		return fmt.Errorf("added %d chunks in one have message, at most %d", adds, MaxHaveAdds)
	}
	return nil
}
