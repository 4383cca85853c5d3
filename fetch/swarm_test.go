package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// bitsOf is a bitfield of n chunks with the given positions set.
func bitsOf(n int, pos ...int) []byte {
	b := make([]byte, (n+7)/8)
	for _, i := range pos {
		b[i/8] |= 1 << (i % 8)
	}
	return b
}

// adds is a have message adding positions of path 0 of a subscription.
func adds(path uint32, pos ...uint32) *p2p.Haves {
	return &p2p.Haves{Entries: []p2p.HaveEntry{{Path: path, Add: pos}}}
}

// TestSchedulerSwarm: which chunks a swarm asks of whom. Seeder s
// provides p1 (12 chunks) and p2 (4 chunks) whole; followers f and g say
// in have messages which chunks they hold. intn answers at (mod n), so a
// run among the equally rare starts at candidate at. (How many chunks a
// batch may have is take's: TestSwarmBatch, TestSwarmFlight.)
func TestSchedulerSwarm(t *testing.T) {
	const s0, f, g = peer.ID("seeder"), peer.ID("f"), peer.ID("g")
	paths := []nix.PathHash{{1}, {2}}
	for _, tc := range []struct {
		name  string
		haves map[peer.ID][]*p2p.Haves
		at    int // where intn's random picks land
		peer  peer.ID
		n     int
		want  string
		start string // peers met by the have messages
		ahead uint64 // swarmAhead, if not 0
		// later: the seeder answered Later for p1/0 (deferred), which it
		// is not asked for again (TestSchedulerLater); moved: the window
		// has moved since.
		later, moved bool
	}{
		{name: "alone with a seeder: plan order", peer: s0, n: 4, want: "p1/0 p1/1 p1/2 p1/3"},
		{name: "a follower is asked for what it holds",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(0, 5, 6, 7)}}, peer: f, n: 8, want: "p1/5 p1/6 p1/7", start: "f"},
		{name: "the seeder is asked first for what no follower holds",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(0, 0, 1, 2, 3)}, g: {adds(0, 4, 5)}}, peer: s0, n: 4,
			want: "p1/6 p1/7 p1/8 p1/9", start: "f g"},
		{name: "rarest first among followers",
			haves: map[peer.ID][]*p2p.Haves{
				f: {{Entries: []p2p.HaveEntry{{Path: 0, Bits: bitsOf(12, 0, 1, 2, 3, 4, 5)}}}},
				g: {adds(0, 0, 1)},
			}, peer: f, n: 4, want: "p1/2 p1/3 p1/4 p1/5", start: "f g"},
		{name: "among the equally rare, a run from a random place",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 0)}}, at: 13, peer: s0, n: 4, want: "p2/2 p2/3 p1/0 p1/1", start: "f"},
		{name: "the first paths in plan order first",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 0)}}, at: 13, peer: s0, n: 4, want: "p1/1 p1/2 p1/3 p1/4", start: "f",
			ahead: 12 << 10},
		{name: "then the others, rarest first",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 1)}}, peer: s0, n: 14,
			want: "p1/0 p1/1 p1/2 p1/3 p1/4 p1/5 p1/6 p1/7 p1/8 p1/9 p1/10 p1/11 p2/0 p2/2", start: "f", ahead: 12 << 10},
		{name: "a seeder that answered Later is asked beyond the window",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 0)}}, at: 13, peer: s0, n: 4, want: "p2/3 p1/1 p1/2 p1/3", start: "f",
			ahead: 12 << 10, later: true},
		{name: "... until the window moves",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 0)}}, at: 13, peer: s0, n: 4, want: "p1/3 p1/4 p1/5 p1/6", start: "f",
			ahead: 12 << 10, later: true, moved: true},
		{name: "a follower is asked for what it holds beyond them",
			haves: map[peer.ID][]*p2p.Haves{f: {adds(1, 0, 1)}}, peer: f, n: 8, want: "p2/0 p2/1", start: "f", ahead: 12 << 10},
		{name: "a whole path said in one flag",
			haves: map[peer.ID][]*p2p.Haves{f: {{Entries: []p2p.HaveEntry{{Path: 1, All: true}}}}}, peer: f, n: 8,
			want: "p2/0 p2/1 p2/2 p2/3", start: "f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p1 := testItem(1, 12, []peer.ID{s0})
			p2 := testItem(2, 4, []peer.ID{s0})
			s, _ := testScheduler(p1, p2)
			s.addStream(s0)
			s.intn = func(n int) int { return tc.at % n }
			if tc.ahead != 0 {
				defer func(was uint64) { swarmAhead = was }(swarmAhead)
				swarmAhead = tc.ahead
			}
			var met []string
			for _, p := range []peer.ID{f, g} {
				for _, msg := range tc.haves[p] {
					start, err := s.haves(p, paths, msg)
					if err != nil {
						t.Fatal(err)
					}
					for _, q := range start {
						met = append(met, string(q))
					}
				}
			}
			if tc.later {
				s.deferred(s0, firstQueued(s), "")
			}
			if tc.moved {
				s.peers.get(s0).beyond-- // the mark of the window one item back
			}
			batch := s.pick(s.peers.get(tc.peer), tc.n)
			if got := strings.Join(chunksOf(batch), " "); got != tc.want {
				t.Errorf("pick(%s, %d) = %q, want %q", tc.peer, tc.n, got, tc.want)
			}
			if got := strings.Join(met, " "); got != tc.start {
				t.Errorf("peers met: %q, want %q", got, tc.start)
			}
		})
	}
}

func TestSchedulerHaveLies(t *testing.T) {
	const s0, f = peer.ID("seeder"), peer.ID("f")
	paths := []nix.PathHash{{1}}
	for _, tc := range []struct {
		name string
		msg  *p2p.Haves
		why  string
	}{
		{"a chunk past the end", adds(0, 12), "said it holds chunk 12 of p1, which has 12"},
		{"a bitfield of another length", &p2p.Haves{Entries: []p2p.HaveEntry{{Path: 0, Bits: bitsOf(64, 1)}}}, "bitfield of 8 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testScheduler(testItem(1, 12, []peer.ID{s0}))
			s.addStream(s0)
			if _, err := s.haves(f, paths, tc.msg); err == nil || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("haves: %v, want an error saying %q", err, tc.why)
			}
			if ps := s.peers[f]; !strings.Contains(ps.dropped, tc.why) || ps.bad != 1 {
				t.Errorf("peer state %+v: want dropped and blamed", ps)
			}
			if s.err != nil {
				t.Errorf("the transfer failed: %v", s.err)
			}
		})
	}
	t.Run("advertising chunks it then does not serve", func(t *testing.T) {
		s, sts := testScheduler(testItem(1, 12, []peer.ID{s0}))
		s.addStream(s0)
		var all []uint32
		for i := range 12 {
			all = append(all, uint32(i))
		}
		s.haves(f, paths, adds(0, all...))
		for i := range maxMisses {
			w := sts[0].wants[i]
			if got := w.avail; got != 2 {
				t.Fatalf("chunk %d held by %d peers, want 2", i, got)
			}
			why := s.lacks(f, w)
			if w.avail != 1 {
				t.Errorf("after a miss chunk %d is held by %d peers, want 1", i, w.avail)
			}
			if (why != "") != (i == maxMisses-1) {
				t.Fatalf("miss %d: dropped %q", i+1, why)
			}
		}
		if s.peers[f].dropped == "" || s.peers[f].bad != 1 || s.err != nil {
			t.Errorf("after %d misses: %+v, err %v", maxMisses, s.peers[f], s.err)
		}
		for _, w := range sts[0].wants {
			if w.avail != 1 {
				t.Errorf("chunk %d held by %d peers after the liar was dropped, want 1", w.i, w.avail)
			}
		}
	})
}

// TestSchedulerPartialHolders: a chunk some follower holds keeps its item
// alive when the seeder goes; a chunk nobody holds does not.
func TestSchedulerPartialHolders(t *testing.T) {
	const s0, f = peer.ID("seeder"), peer.ID("f")
	paths := []nix.PathHash{{1}}
	for _, tc := range []struct {
		name string
		held []uint32
		fail bool
	}{
		{"every missing chunk held by a follower", []uint32{0, 1, 2, 3}, false},
		{"one chunk held by nobody", []uint32{0, 1, 2}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testScheduler(testItem(1, 4, []peer.ID{s0}))
			s.addStream(s0)
			s.haves(f, paths, adds(0, tc.held...))
			s.dropPeer(s0, "stalled")
			if (s.err != nil) != tc.fail {
				t.Fatalf("err = %v, want failure %v", s.err, tc.fail)
			}
			if tc.fail {
				return
			}
			batch := s.pick(s.peers.get(f), 64)
			if got := strings.Join(chunksOf(batch), " "); got != "p1/0 p1/1 p1/2 p1/3" {
				t.Errorf("the follower is asked for %q", got)
			}
		})
	}
}

// TestSwarmBatch: a peer is handed about batchTime of chunks at its rate
// (firstBatch before it is known), and once other followers are known at
// most swarmBatch (what others cannot yet know is in flight).
func TestSwarmBatch(t *testing.T) {
	const s0, f = peer.ID("seeder"), peer.ID("f")
	s, sts := testScheduler(testItem(1, 400, []peer.ID{s0}))
	s.addStream(s0)
	t0 := time.Unix(0, 0)
	take := func(what string, want int) {
		t.Helper()
		batch, _ := s.take(s0, batchSize, time.Now())
		if len(batch) != want {
			t.Errorf("%s: %d chunks, want %d", what, len(batch), want)
		}
		s.release(s0, batch, 0)
	}
	take("rate unknown", firstBatch)
	s.began(s0, t0)
	w := sts[0].wants[399]
	s.claim(w)
	s.delivered(s0, w, 64<<20, t0.Add(time.Second)) // 64 MiB/s: 512 chunks in batchTime
	take("fast", batchSize)
	s.peers[s0].last = t0.Add(64 * time.Second) // 1 MiB/s: 8 chunks
	take("slow", 8)
	s.peers[s0].last = t0.Add(time.Second)
	s.haves(f, []nix.PathHash{{1}}, adds(0, 199))
	take("in a swarm", swarmBatch)
}

// TestSwarmFlight: in a swarm a transfer keeps at most minSwarmFlight
// chunk requests out over all its peers until it has measured its rate,
// then about swarmFlight of it, and each peer half of them; alone with
// its seeders it is not bound.
func TestSwarmFlight(t *testing.T) {
	const s0, s1, f = peer.ID("s0"), peer.ID("s1"), peer.ID("f")
	s, sts := testScheduler(testItem(1, 400, []peer.ID{s0, s1}))
	s.meetProviders()
	t0 := time.Unix(0, 0)
	a, _ := s.take(s0, 8, t0)
	b, _ := s.take(s1, 8, t0)
	if len(a) != firstBatch || len(b) != firstBatch {
		t.Fatalf("alone with seeders: batches of %d and %d, want %d", len(a), len(b), firstBatch)
	}
	s.release(s0, a, 0)
	s.release(s1, b, 0)
	s.haves(f, []nix.PathHash{{1}}, adds(0, 399))
	a, _ = s.take(s0, 8, t0)
	b, _ = s.take(s1, 8, t0)
	if len(a) != minSwarmFlight/2 || len(b) != minSwarmFlight/2 {
		t.Fatalf("in a swarm, rate unknown: %d and %d chunks out, want %d each", len(a), len(b), minSwarmFlight/2)
	}
	if c, _ := s.take(s0, 8, t0); len(c) != 0 {
		t.Fatalf("%d more out with %d out already", len(c), minSwarmFlight)
	}
	s.release(s0, a, 0)
	if c, _ := s.take(s0, 8, t0); len(c) != len(a) {
		t.Errorf("after %d came back: %d more, want as many", len(a), len(c))
	}
	// 100 MB/s received over the first second: 10 ms of it is 15 chunks.
	w := sts[0].wants[0]
	s.claim(w)
	s.delivered(s0, w, 100e6, t0.Add(time.Second))
	if got, want := s.flightCap(t0.Add(time.Second)), int(100e6*swarmFlight.Seconds()/(64<<10)); got != want {
		t.Errorf("at 100 MB/s: %d chunks out at once, want %d", got, want)
	}
}

// TestExtend: in a swarm a batch whose last chunk is half in is handed
// one more for the same stream even when as many requests are out as may
// be (that chunk no longer counts), up to swarmBatch a stream; not alone
// with seeders, nor when the peer has nothing more; and release, told
// how often the batch grew, leaves nothing counted out.
func TestExtend(t *testing.T) {
	const s0, s1, f = peer.ID("s0"), peer.ID("s1"), peer.ID("f")
	t0 := time.Unix(0, 0)
	s, _ := testScheduler(testItem(1, 40, []peer.ID{s0, s1}))
	s.meetProviders()
	a, _ := s.take(s0, 8, t0)
	if next := s.extend(s0, len(a), t0); len(next) != 0 {
		t.Errorf("alone with seeders: extended by %v", chunksOf(next))
	}
	s.release(s0, a, 0)
	s.haves(f, []nix.PathHash{{1}}, adds(0, 39))
	a, _ = s.take(s0, 8, t0)
	b, _ := s.take(s1, 8, t0)
	if len(a)+len(b) != minSwarmFlight {
		t.Fatalf("%d and %d out, want %d in all", len(a), len(b), minSwarmFlight)
	}
	grown := 0
	for len(a) < swarmBatch {
		next := s.extend(s0, len(a), t0)
		if len(next) != 1 {
			t.Fatalf("stream of %d: extended by %d, want 1", len(a), len(next))
		}
		a, grown = append(a, next...), grown+1
		if c, _ := s.take(s1, 8, t0); len(c) != 0 {
			t.Fatalf("extending let another stream take %d more", len(c))
		}
	}
	if next := s.extend(s0, len(a), t0); len(next) != 0 {
		t.Errorf("past swarmBatch: extended by %d", len(next))
	}
	s.release(s0, a, grown)
	s.release(s1, b, 0)
	if out := s.peers.inFlight(); out != 0 {
		t.Errorf("%d counted out after every batch came back", out)
	}
	// f holds two chunks: the second is its last to hand.
	s, _ = testScheduler(testItem(1, 8, []peer.ID{s0}))
	s.meetProviders()
	s.haves(f, []nix.PathHash{{1}}, adds(0, 0, 1))
	c, _ := s.take(f, 8, t0)
	if next := s.extend(f, len(c), t0); len(c) != 1 || len(next) != 1 {
		t.Fatalf("f holding two: asked for %d, then extended by %d", len(c), len(next))
	}
	if next := s.extend(f, 2, t0); len(next) != 0 {
		t.Errorf("f holding nothing more: extended by %v", chunksOf(next))
	}
	if out := s.peers.get(f).inFlight; out != 1 {
		t.Errorf("after extending f by nothing: %d counted out on it, want 1", out)
	}
}

// TestExtendOne: however many requests may be out (here fifteen, as on
// a fast link, with three peers live), extend hands one chunk, and a
// stream stops growing at swarmBatch.
func TestExtendOne(t *testing.T) {
	const s0, s1, s2, f = peer.ID("s0"), peer.ID("s1"), peer.ID("s2"), peer.ID("f")
	t0 := time.Unix(0, 0)
	s, sts := testScheduler(testItem(1, 400, []peer.ID{s0, s1, s2}))
	s.meetProviders()
	s.haves(f, []nix.PathHash{{1}}, adds(0, 399))
	s.take(s0, 1, t0) // the first take, at t0
	w := sts[0].wants[0]
	s.claim(w)
	s.delivered(s0, w, 100e6, t0.Add(time.Second))
	now := t0.Add(time.Second)
	if c := s.flightCap(now); c < 8 {
		t.Fatalf("flight cap %d: too few to test", c)
	}
	batch, _ := s.take(s1, 1, now)
	for len(batch) < swarmBatch {
		next := s.extend(s1, len(batch), now)
		if len(next) != 1 {
			t.Fatalf("stream of %d: extended by %d, want 1", len(batch), len(next))
		}
		batch = append(batch, next...)
	}
	if next := s.extend(s1, len(batch), now); len(next) != 0 {
		t.Errorf("stream of %d: extended by %d more", len(batch), len(next))
	}
}

// halfIn is a network whose fetches stop with their last chunk half in:
// FetchMore asks more, says what it added, and fails once let go.
type halfIn struct {
	fakePeers
	added chan []p2p.ChunkWant
	let   chan struct{}
}

func (h *halfIn) FetchMore(ctx context.Context, p peer.ID, wants []p2p.ChunkWant, window int, more func() []p2p.ChunkWant, got func(int, []byte, error) error) error {
	h.added <- more()
	<-h.let
	return errors.New("test: the stream ended")
}

// TestExtendWakesEndgame: a batch extended by the last pending chunk
// opens the endgame, as a take does (TestEndgameWakes): b, waiting with
// nothing pending it can serve, is woken to ask for what a is fetching.
// fetchBatch returns the batch as extended, and releasing it leaves
// nothing counted out.
func TestExtendWakesEndgame(t *testing.T) {
	const a, b, c, f = peer.ID("a"), peer.ID("b"), peer.ID("c"), peer.ID("f")
	s, _ := testScheduler(testItem(1, 1, []peer.ID{a, b}), testItem(2, 1, []peer.ID{a, c}))
	tr, waiting := watchedTransfer(t, s)
	net := &halfIn{added: make(chan []p2p.ChunkWant, 1), let: make(chan struct{})}
	tr.net, tr.opts.StallTimeout = net, time.Minute
	if err := tr.heard(f, []nix.PathHash{{2}}, adds(0, 0)); err != nil { // a swarm
		t.Fatal(err)
	}
	x := tr.take(a, 4)
	if strings.Join(chunksOf(x), " ") != "p1/0" {
		t.Fatalf("a took %v, want the rarest, p1/0", chunksOf(x))
	}
	got := make(chan []*want, 1)
	go func() { got <- tr.take(b, 4) }()
	untilWaiting(t, waiting, b)
	type result struct {
		batch    []*want
		extended int
	}
	fetched := make(chan result, 1)
	go func() {
		batch, extended, _, _ := tr.fetchBatch(context.Background(), a, x)
		fetched <- result{batch, extended}
	}()
	if added := <-net.added; len(added) != 1 {
		t.Fatalf("a's stream extended by %d, want p2/0", len(added))
	}
	if y := strings.Join(chunksOf(woken(t, got, "b's worker when an extension emptied the queue")), " "); y != "p1/0" {
		t.Errorf("b took %q in the endgame, want p1/0", y)
	}
	close(net.let)
	r := <-fetched
	if strings.Join(chunksOf(r.batch), " ") != "p1/0 p2/0" || r.extended != 1 {
		t.Errorf("fetchBatch returned %v extended %d times, want p1/0 p2/0 once", chunksOf(r.batch), r.extended)
	}
	s = tr.lock()
	s.release(a, r.batch, r.extended)
	s.release(b, []*want{s.items[nix.PathHash{1}].wants[0]}, 0)
	out := s.peers.inFlight()
	tr.unlockQuiet()
	if out != 0 {
		t.Errorf("%d counted out once every batch came back", out)
	}
}

// TestSchedulerLater: a chunk a peer answered Later is not asked of it
// again while another peer can be asked for it, and is, insisting, once
// none can.
func TestSchedulerLater(t *testing.T) {
	const s0, s1 = peer.ID("s0"), peer.ID("s1")
	s, _ := testScheduler(testItem(1, 12, []peer.ID{s0, s1}))
	s.meetProviders()
	first, _ := s.take(s0, 4, time.Now())
	for _, w := range first {
		s.deferred(s0, w, "")
	}
	s.release(s0, first, 0)
	if got, _ := s.take(s0, 4, time.Now()); strings.Join(chunksOf(got), " ") != "p1/4 p1/5 p1/6 p1/7" {
		t.Errorf("s0 is asked again for what it deferred: %v", chunksOf(got))
	}
	if got := s.undefer(s0, first); len(got) != 4 {
		t.Errorf("undefer while s1 can be asked: %d still deferred, want 4", len(got))
	}
	if got, _ := s.take(s1, 4, time.Now()); strings.Join(chunksOf(got), " ") != "p1/0 p1/1 p1/2 p1/3" {
		t.Errorf("s1 is not asked for what s0 deferred: %v", chunksOf(got))
	}
	s.dropPeer(s1, "test")
	if still := s.undefer(s0, first); len(still) != 0 {
		t.Errorf("undefer with nobody else left: %d still deferred", len(still))
	}
	if s.mayDefer(s0, first[0]) {
		t.Errorf("asked again because nobody else can be, s0 may still defer it")
	}
	s.release(s1, first, 0)
	if got, _ := s.take(s0, 4, time.Now()); strings.Join(chunksOf(got), " ") != "p1/0 p1/1 p1/2 p1/3" {
		t.Errorf("s0 is not asked again once nobody else can be: %v", chunksOf(got))
	}
}

// TestCompressDecision: a peer is asked for compressed chunks until its
// rate is known over a megabyte; then the first measure decides against
// compressBelow, and later ones change it only past the marks (slower
// than compressBelow, faster than compressAbove); always or never when
// told.
func TestCompressDecision(t *testing.T) {
	const p = peer.ID("p")
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		mode  Compress
		rates []float64 // bytes per second measured over a second before each decision
		want  []bool
		// shrink is the wire bytes per chunk byte of what came compressed
		// (0: nothing compressed came yet)
		shrink float64
	}{
		{"unknown rate", CompressAuto, []float64{0}, []bool{true}, 0},
		{"under a megabyte measured", CompressAuto, []float64{512 << 10, 1e9}, []bool{true, false}, 0},
		{"a slow link", CompressAuto, []float64{2.5e6}, []bool{true}, 0},
		{"loopback", CompressAuto, []float64{1e9}, []bool{false}, 0},
		{"a first measure between the marks is fast", CompressAuto, []float64{100e6, 30e6, 100e6}, []bool{false, true, true}, 0},
		{"between the marks it stays", CompressAuto, []float64{2.5e6, 100e6, 500e6, 100e6}, []bool{true, true, false, false}, 0},
		{"never", CompressNever, []float64{2.5e6}, []bool{false}, 0},
		{"always", CompressAlways, []float64{1e9}, []bool{true}, 0},
		{"text shrinks: it stays", CompressAuto, []float64{2.5e6, 2.5e6, 2.5e6}, []bool{true, true, true}, 0.3},
		{"random data does not shrink: it stops for good", CompressAuto, []float64{2.5e6, 2.5e6, 2.5e6}, []bool{true, false, false}, 1.0},
		{"always, even if it does not shrink", CompressAlways, []float64{2.5e6, 2.5e6}, []bool{true, true}, 1.0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testScheduler(testItem(1, 4, []peer.ID{p}))
			ps := s.peers.get(p)
			for i, rate := range tc.rates {
				ps.first, ps.last, ps.bytes = t0, t0.Add(time.Second), int64(rate)
				// Before decision i, i megabytes came compressed.
				raw := int64(i) << 20
				if got := s.compress(p, tc.mode, int64(tc.shrink*float64(raw)), raw); got != tc.want[i] {
					t.Errorf("decision %d at %.3g B/s: %v, want %v", i, rate, got, tc.want[i])
				}
			}
		})
	}
}

// TestCompressJudgedOverTheTransfer: whether chunks shrink is judged
// on what came compressed from all peers together, and once it did not
// shrink no peer is asked again, not even one never judged: in a room,
// judged peer by peer, each follower had a megabyte compressed by each
// of its peers.
func TestCompressJudgedOverTheTransfer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const half = 512 << 10
	for _, tc := range []struct {
		name string
		// shrink is the wire bytes per chunk byte of what came compressed
		// from p and from q, half a megabyte each
		shrinkP, shrinkQ float64
		want             bool // r is asked for compressed chunks after
	}{
		{"neither shrinks", 1.0, 1.0, false},
		{"both shrink", 0.3, 0.3, true},
		{"together they shrink enough", 0.7, 1.0, true},
		{"together they do not", 0.95, 0.9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := []peer.ID{"p", "q", "r"}
			s, _ := testScheduler(testItem(1, 4, ps))
			for _, p := range ps {
				st := s.peers.get(p)
				st.first, st.last, st.bytes = t0, t0.Add(time.Second), 2.5e6 // a slow link: compression pays
				if !s.compress(p, CompressAuto, 0, 0) {
					t.Fatalf("%s is not asked for compressed chunks at first", p)
				}
			}
			// Half a megabyte each is not a judgement for either alone.
			s.compress("p", CompressAuto, int64(tc.shrinkP*half), half)
			s.compress("q", CompressAuto, int64(tc.shrinkQ*half), half)
			if got := s.compress("r", CompressAuto, 0, 0); got != tc.want {
				t.Errorf("r asked for compressed chunks: %v, want %v", got, tc.want)
			}
			if got := s.compress("p", CompressAuto, int64(tc.shrinkP*half), half); got != tc.want {
				t.Errorf("p asked for compressed chunks: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCompressCountersStartOver: a peer's counters are the node's and
// start over when its connections all close; what the transfer had of
// it before stays counted, and the counters' past (another transfer's
// bytes) is never taken for this transfer's.
func TestCompressCountersStartOver(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const mb = 1 << 20
	ps := []peer.ID{"p", "q"}
	s, _ := testScheduler(testItem(1, 4, ps))
	for _, p := range ps {
		st := s.peers.get(p)
		st.first, st.last, st.bytes = t0, t0.Add(time.Second), 2.5e6
	}
	// p's counters hold an earlier sync's text: 1 MiB on the wire for
	// 10 MiB of chunks. This transfer has half a megabyte of random data
	// from p, then p reconnects and its counters start over.
	s.compress("p", CompressAuto, 1*mb, 10*mb)
	s.compress("p", CompressAuto, 1*mb+mb/2, 10*mb+mb/2)
	s.compress("p", CompressAuto, 0, 0)
	// q sends text: 3.5 MiB of chunks in 1 MiB. Together the transfer
	// had 4 MiB that took 1.5 on the wire: it shrinks.
	if !s.compress("q", CompressAuto, 0, 0) || !s.compress("q", CompressAuto, mb, 3*mb+mb/2) {
		t.Fatalf("q's text is not asked for compressed")
	}
	if s.noShrink {
		t.Fatalf("judged not to shrink: the transfer had (wire, raw) %v", s.zstdGot)
	}
	if want := [2]int64{mb + mb/2, 4 * mb}; s.zstdGot != want {
		t.Errorf("the transfer had (wire, raw) %v, want %v", s.zstdGot, want)
	}
	// What comes from p after it reconnected counts on from what it had.
	s.compress("p", CompressAuto, mb/2, mb/2)
	if want := [2]int64{2 * mb, 4*mb + mb/2}; s.zstdGot != want {
		t.Errorf("after p sent more: (wire, raw) %v, want %v", s.zstdGot, want)
	}
}

// watchedTransfer is a transfer driven by s whose workers are started
// by hand; waiting says how often a worker of p found nothing to take
// and waited.
func watchedTransfer(t *testing.T, s *scheduler) (tr *transfer, waiting func(p peer.ID) int) {
	tr = &transfer{pl: s.plan, log: slog.New(slog.DiscardHandler)}
	tr.init("/nix/store")
	tr.sched = s
	tr.spawn = func(peer.ID) {}
	waits := map[peer.ID]int{} // guarded by tr.mu
	testHookWait = func(p peer.ID) { waits[p]++ }
	t.Cleanup(func() { testHookWait = nil })
	return tr, func(p peer.ID) int {
		defer tr.unlockQuiet()
		tr.lock()
		return waits[p]
	}
}

// woken returns the batch a waiting worker took once woken (who, by
// what), failing the test if none came within 10 s.
func woken(t *testing.T, got <-chan []*want, who string) []*want {
	t.Helper()
	select {
	case batch := <-got:
		return batch
	case <-time.After(10 * time.Second):
		t.Fatalf("no batch: %s was not woken", who)
		return nil
	}
}

// untilWaiting returns once a worker of p has waited.
func untilWaiting(t *testing.T, waiting func(peer.ID) int, p peer.ID) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); waiting(p) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s's worker never waited", p)
		}
	}
}

// TestHavesWakeOnlyTheirPeer: what a peer says it gained wakes only the
// workers that may ask it. (Every have message woke every waiting worker
// of the transfer to scan the pending chunks again: in a room of 16, some
// twenty goroutines, sixteen times every 100 ms.)
func TestHavesWakeOnlyTheirPeer(t *testing.T) {
	const s0, f, g = peer.ID("seeder"), peer.ID("f"), peer.ID("g")
	paths := []nix.PathHash{{1}}
	s, _ := testScheduler(testItem(1, 8, []peer.ID{s0}))
	tr, waiting := watchedTransfer(t, s)
	// Both followers are known to the swarm and hold nothing yet.
	for _, p := range []peer.ID{f, g} {
		if err := tr.heard(p, paths, adds(0)); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan []*want, 2)
	for _, p := range []peer.ID{f, g} {
		go func() { got <- tr.take(p, 8) }()
	}
	untilWaiting(t, waiting, f)
	untilWaiting(t, waiting, g)
	if err := tr.heard(f, paths, adds(0, 3)); err != nil {
		t.Fatal(err)
	}
	if c := strings.Join(chunksOf(woken(t, got, "f's worker by f's have message")), " "); c != "p1/3" {
		t.Fatalf("f's worker took %q, want p1/3", c)
	}
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if n := waiting(g); n != 1 {
			t.Fatalf("g's worker woke and waited again (%d waits) on f's have message", n)
		}
	}
	tr.fail(errors.New("done")) // a failure wakes everyone
	if batch := <-got; batch != nil {
		t.Fatalf("g's worker took %v after the transfer failed", chunksOf(batch))
	}
}

// TestPickScan: rarest first weighs at most pickScan candidates, the
// first in fetch order: on a closure of more, a pick's work does not grow
// with it (BenchmarkSwarmPick). The seeder answered Later, so it is asked
// beyond the window, where every chunk is as rare; intn puts the run's
// start at the last candidate it weighs, and the run wraps to the first.
func TestPickScan(t *testing.T) {
	const s0, f = peer.ID("seeder"), peer.ID("f")
	var items []*item
	for i := range 100 { // 6,800 chunks
		it := testItem(byte(i), 68, []peer.ID{s0})
		it.info.Path.Hash = nix.PathHash{byte(i), 1}
		items = append(items, it)
	}
	s, _ := testScheduler(items...)
	s.addStream(s0)
	s.intn = func(n int) int { return n - 1 }
	if _, err := s.haves(f, []nix.PathHash{items[99].info.Path.Hash}, adds(0, 0)); err != nil {
		t.Fatal(err)
	}
	s.deferred(s0, firstQueued(s), "")
	pos := map[*want]int{}
	for _, st := range s.order {
		for _, w := range st.wants {
			pos[w] = len(pos)
		}
	}
	batch := s.pick(s.peers.get(s0), 4)
	var got []int
	for _, w := range batch {
		got = append(got, pos[w])
	}
	if want := []int{pickScan, 1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("picked the chunks at %v in fetch order, want %v (p0/0 was deferred)", got, want)
	}
}

// TestAbandonedNotQueued: the chunks of a description given up are no
// longer queued, so the endgame starts once the rest are in flight. p1's
// description is abandoned with its chunks still queued; a takes p2's,
// and b, who can serve p2 too, is handed them in the endgame, not
// nothing.
func TestAbandonedNotQueued(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	s, sts := testScheduler(testItem(1, 4, []peer.ID{a}), testItem(2, 4, []peer.ID{a, b}))
	s.addStream(a)
	s.addStream(b)
	s.abandon(sts[0])
	if s.pending != 4 {
		t.Fatalf("%d chunks queued after p1 was given up, want p2's 4", s.pending)
	}
	if got := strings.Join(chunksOf(s.handOut(s.peers.get(a), 4)), " "); got != "p2/0 p2/1 p2/2 p2/3" {
		t.Fatalf("a took %q, want p2's chunks", got)
	}
	if got := strings.Join(chunksOf(s.handOut(s.peers.get(b), 4)), " "); got != "p2/0 p2/1 p2/2 p2/3" {
		t.Errorf("b took %q, want p2's chunks in the endgame", got)
	}
}

// TestWord: a bitfield read 64 bits at a time, as bit(b, i) reads it.
func TestWord(t *testing.T) {
	b := bitsOf(70, 0, 7, 8, 63, 64, 69)
	for i := range 128 {
		if got, want := word(b, i/64)&(1<<(i%64)) != 0, bit(b, i); got != want {
			t.Errorf("bit %d: word says %v, bit says %v", i, got, want)
		}
	}
	if w := word(nil, 3); w != 0 {
		t.Errorf("word of nothing = %#x", w)
	}
}

// BenchmarkSwarmPick: picking a batch for a follower in a room, from
// closures of 30, 300 and 3,000 paths of 68 chunks of 64 KiB (128 MiB,
// 1.3 GB and 13 GB), of which it said it holds every other chunk; the
// seeder provides them whole; the batch goes back after. A follower in a
// swarm picks about once a chunk, so what a pick costs at a size, times
// the chunks, is what the closure's picks cost.
func BenchmarkSwarmPick(b *testing.B) {
	for _, paths := range []int{30, 300, 3000} {
		b.Run(fmt.Sprintf("chunks=%d", paths*68), func(b *testing.B) {
			const s0, f = peer.ID("seeder"), peer.ID("f")
			var items []*item
			var hashes []nix.PathHash
			for i := range paths {
				it := testItem(byte(i), 68, []peer.ID{s0})
				it.info.Path.Hash = nix.PathHash{byte(i), byte(i >> 8)}
				for k := range it.index {
					it.index[k].Size = 64 << 10
				}
				it.offs, it.info.NarSize = it.index.Offsets(), it.index.NarSize()
				items = append(items, it)
				hashes = append(hashes, it.info.Path.Hash)
			}
			s, _ := testScheduler(items...)
			s.addStream(s0)
			var every []uint32
			for i := 0; i < 68; i += 2 {
				every = append(every, uint32(i))
			}
			for k := range hashes {
				if _, err := s.haves(f, hashes, adds(uint32(k), every...)); err != nil {
					b.Fatal(err)
				}
			}
			ps := s.peers.get(f)
			for b.Loop() {
				batch := s.pick(ps, 2)
				if len(batch) != 2 {
					b.Fatalf("picked %d", len(batch))
				}
				s.release(f, batch, 0)
			}
		})
	}
}

// TestFlightRiseWakes: a chunk in that raises how many requests may be
// out in a swarm wakes the workers the cap held back. (Only a batch
// ending woke them, so a room's followers kept one chunk-time's requests
// out too few until some batch ended.)
func TestFlightRiseWakes(t *testing.T) {
	const s0, f, g, h = peer.ID("seeder"), peer.ID("f"), peer.ID("g"), peer.ID("h")
	paths := []nix.PathHash{{1}}
	it := testItem(1, 8, []peer.ID{s0})
	for i := range it.index {
		it.index[i].Size = 8 << 20 // a fast link: 8 MiB in at once
	}
	it.offs, it.info.NarSize = it.index.Offsets(), it.index.NarSize()
	s, sts := testScheduler(it)
	sp, _, err := privateSpool(t.TempDir(), it.info.NarSize)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	sts[0].spool = sp
	tr, waiting := watchedTransfer(t, s)
	for _, p := range []peer.ID{f, g, h} {
		if err := tr.heard(p, paths, adds(0, 0, 1, 2, 3, 4, 5, 6, 7)); err != nil {
			t.Fatal(err)
		}
	}
	fb, gb := tr.take(f, 8), tr.take(g, 8)
	if len(fb) != 1 || len(gb) != 1 {
		t.Fatalf("took %d and %d chunks, want one each (two out at first)", len(fb), len(gb))
	}
	got := make(chan []*want, 1)
	go func() { got <- tr.take(h, 8) }()
	untilWaiting(t, waiting, h)
	if err := tr.deliver(f, fb[0], make([]byte, fb[0].ref.Size)); err != nil {
		t.Fatal(err)
	}
	if batch := woken(t, got, "h's worker when the chunk raised the cap"); len(batch) == 0 {
		t.Fatal("h's worker took nothing")
	}
	tr.fail(errors.New("done"))
}

// TestEndgameWakes: a take that empties the queue wakes the workers
// waiting for something to ask: what is in flight elsewhere is now theirs
// to ask for too. a serves x and y, b only x; a takes x, b waits (only y
// is left), a takes y, and b asks for x's chunks as well.
func TestEndgameWakes(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	s, _ := testScheduler(testItem(1, 4, []peer.ID{a, b}), testItem(2, 4, []peer.ID{a}))
	tr, waiting := watchedTransfer(t, s)
	if x := tr.take(a, 4); strings.Join(chunksOf(x), " ") != "p1/0 p1/1 p1/2 p1/3" {
		t.Fatalf("a took %v, want p1's chunks", chunksOf(x))
	}
	got := make(chan []*want, 1)
	go func() { got <- tr.take(b, 4) }()
	untilWaiting(t, waiting, b)
	if y := tr.take(a, 4); len(y) != 4 {
		t.Fatalf("a took %v, want p2's chunks", chunksOf(y))
	}
	if c := strings.Join(chunksOf(woken(t, got, "b's worker when the queue emptied")), " "); c != "p1/0 p1/1 p1/2 p1/3" {
		t.Fatalf("b took %q in the endgame, want p1's chunks", c)
	}
}

// TestHolders: a gain is not said to the peers that hold the chunk
// themselves: those that said so in have messages, and those that
// provide the path whole, unless they were dropped or lack it.
func TestHolders(t *testing.T) {
	const s0, s1, f, g, d = peer.ID("seeder"), peer.ID("seeder1"), peer.ID("f"), peer.ID("g"), peer.ID("dropped")
	paths := []nix.PathHash{{1}}
	s, sts := testScheduler(testItem(1, 12, []peer.ID{s0, s1}))
	s.haves(f, paths, adds(0, 3, 9))
	s.haves(g, paths, &p2p.Haves{Entries: []p2p.HaveEntry{{Path: 0, Bits: bitsOf(12, 9, 11)}}})
	s.haves(d, paths, adds(0, 3, 9, 11))
	s.dropPeer(d, "served chunks it did not hold") // not believed any more
	s.peers.get(s1).lacks[nix.PathHash{1}] = true  // said it lacks the path after all
	for _, tc := range []struct {
		i    int
		want string
	}{
		{0, "seeder"},
		{3, "f seeder"},
		{9, "f g seeder"},
		{11, "g seeder"},
	} {
		var got []string
		for _, p := range s.holders(sts[0], tc.i) {
			got = append(got, string(p))
		}
		slices.Sort(got)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("holders of chunk %d: %q, want %q", tc.i, got, tc.want)
		}
	}
}

// TestAheadAfterRedescribe: a path passed by the window while it was not
// being fetched (stale, its describer dropped) is among the first asked
// for again once it is described anew.
func TestAheadAfterRedescribe(t *testing.T) {
	const s0, f = peer.ID("seeder"), peer.ID("f")
	defer func(was uint64) { swarmAhead = was }(swarmAhead)
	swarmAhead = 12 << 10 // p1 alone
	p1, p2 := testItem(1, 12, []peer.ID{s0}), testItem(2, 4, []peer.ID{s0})
	s, sts := testScheduler(p1, p2)
	s.addStream(s0)
	if _, err := s.haves(f, []nix.PathHash{{1}, {2}}, adds(1, 0)); err != nil {
		t.Fatal(err)
	}
	for _, w := range sts[0].wants {
		w.done = true
	}
	sts[0].phase = stale
	if got := strings.Join(chunksOf(s.pick(s.peers.get(s0), 2)), " "); strings.Contains(got, "p1/") {
		t.Fatalf("asked for %q of a stale path", got)
	}
	all := make([]int, len(p1.index))
	for i := range all {
		all[i] = i
	}
	sts[0].desc++
	s.reset(sts[0], nil, all, 0, 0)
	for _, c := range chunksOf(s.pick(s.peers.get(s0), 4)) {
		if !strings.HasPrefix(c, "p1/") {
			t.Errorf("asked for %s before the first path, described anew", c)
		}
	}
}
