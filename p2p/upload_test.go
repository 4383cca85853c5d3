package p2p

import (
	"bufio"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// TestServesClaim: a node that only serves sends a chunk to one asker
// while that asker is connected; others who may be deferred are told how
// long to wait, others are served.
func TestServesClaim(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	x := chunk.Sum([]byte("x"))
	t0 := time.Unix(1000, 0)
	up := func(peer.ID) bool { return true }
	down := func(peer.ID) bool { return false }
	for _, tc := range []struct {
		name      string
		asker     peer.ID
		mayDefer  bool
		at        time.Duration // after a got x at t0
		connected func(peer.ID) bool
		later     time.Duration
	}{
		{"another asker, just after", b, true, 500 * time.Millisecond, up, serveWindow - 500*time.Millisecond},
		{"another asker that may not be deferred", b, false, 500 * time.Millisecond, up, 0},
		{"the same asker again", a, true, 500 * time.Millisecond, up, 0},
		{"another asker, long after", b, true, 30 * time.Second, up, laterAfter},
		{"another asker, after the chunk is forgotten", b, true, maxServeAge, up, 0},
		{"another asker, the first gone", b, true, 500 * time.Millisecond, down, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s serves
			if later, _, _ := s.claim(a, x, true, true, t0, up); later != 0 {
				t.Fatalf("the first asker is deferred by %v", later)
			}
			later, to, _ := s.claim(tc.asker, x, tc.mayDefer, true, t0.Add(tc.at), tc.connected)
			if later != tc.later {
				t.Errorf("later = %v, want %v", later, tc.later)
			}
			// A deferred asker is told where the chunk went.
			if wantTo := peer.ID(""); later != 0 && to != a || later == 0 && to != wantTo {
				t.Errorf("to = %q with later %v, want %q only when deferred", to, later, a)
			}
		})
	}

	t.Run("a node that is fetching remembers nothing", func(t *testing.T) {
		var s serves
		s.claim(a, x, true, false, t0, up)
		if later, _, _ := s.claim(b, x, true, true, t0, up); later != 0 {
			t.Errorf("deferred by a chunk sent while fetching: %v", later)
		}
	})
	t.Run("an unsent claim is undone", func(t *testing.T) {
		var s serves
		_, _, undo := s.claim(a, x, true, true, t0, up)
		undo()
		if later, _, _ := s.claim(b, x, true, true, t0, up); later != 0 {
			t.Errorf("deferred by a chunk never sent: %v", later)
		}
	})
	t.Run("the window starts when the chunk leaves", func(t *testing.T) {
		var s serves
		s.claim(a, x, true, true, t0, up)
		s.sent(a, x, t0.Add(5*time.Second)) // queued behind others for 5 s
		// ... which also says answers wait here: the window grows by
		// twice their average wait (5 s / 8 after one).
		want := serveWindow + 2*(5*time.Second/8) - time.Second
		if later, _, _ := s.claim(b, x, true, true, t0.Add(6*time.Second), up); later != want {
			t.Errorf("later = %v, want %v", later, want)
		}
	})
	t.Run("stretched by the time scale", func(t *testing.T) {
		s := serves{scale: 10}
		s.claim(a, x, true, true, t0, up)
		if later, _, _ := s.claim(b, x, true, true, t0.Add(time.Second), up); later != 10*serveWindow-time.Second {
			t.Errorf("later = %v, want %v", later, 10*serveWindow-time.Second)
		}
		if later, _, _ := s.claim(b, x, true, true, t0.Add(2*maxServeAge), up); later != 10*laterAfter {
			t.Errorf("later = %v, want %v: what it sent is remembered 10 × as long", later, 10*laterAfter)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var s serves
		for i := range maxServes + 10 {
			id := chunk.Sum([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
			s.claim(a, id, true, true, t0, up)
		}
		if len(s.m) > maxServes {
			t.Errorf("%d serves remembered, cap %d", len(s.m), maxServes)
		}
		// Once they are old enough, old serves make room.
		s.claim(a, x, true, true, t0.Add(maxServeAge), up)
		if _, ok := s.m[x]; !ok || len(s.m) > maxServes {
			t.Errorf("a serve after the window is not remembered (%d remembered)", len(s.m))
		}
	})
}

// TestChunkLater: over real nodes, a node that only serves sends a chunk
// to one of two followers asking for it at once and tells the other to
// get it there; a node fetching itself serves both.
func TestChunkLater(t *testing.T) {
	ts, tb, tc := NewTrustGroup(nil), NewTrustGroup(nil), NewTrustGroup(nil)
	s, ss := testNode(t, ts)
	b, _ := testNode(t, tb)
	c, _ := testNode(t, tc)
	pair(s, b, ts, tb)
	pair(s, c, ts, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range []*Node{b, c} {
		if err := n.Connect(ctx, s.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	pi := addTree(t, ss, map[string][]byte{"f": []byte("one chunk for the whole room")})
	ix, err := ss.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	want := ChunkWant{Chunk: ix[0].ID, Size: ix[0].Size, Defer: true}
	fetch := func(n *Node, w ChunkWant) error {
		return n.Fetch(ctx, s.ID(), []ChunkWant{w}, 1, func(_ int, _ []byte, err error) error { return err })
	}
	if err := fetch(b, want); err != nil {
		t.Fatalf("the first follower: %v", err)
	}
	var later *LaterError
	if err := fetch(c, want); !errors.As(err, &later) || later.After <= 0 || later.After > serveWindow || later.To != b.ID() {
		t.Fatalf("the second follower asking at once: %v, want to be told to get it from %s or come back within %v", err, b.ID(), serveWindow)
	}
	noDefer := want
	noDefer.Defer = false
	if err := fetch(c, noDefer); err != nil {
		t.Fatalf("the second follower, not allowing deferral: %v", err)
	}
	remove := s.AddPartial(&fakePartial{})
	defer remove()
	if err := fetch(c, want); err != nil {
		t.Fatalf("a node fetching itself deferred a follower: %v", err)
	}
}

// TestLaterRefused: a Later answer to a request that did not allow it,
// with data, or not naming the peer the chunk went to (or naming the
// answering peer itself), is bad data.
func TestLaterRefused(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want ChunkWant
		hdr  ChunkHeader // To "self" names the answering peer
	}{
		{"to a request that did not allow it", ChunkWant{Size: 1}, ChunkHeader{Later: 100, To: []byte(other)}},
		{"with data", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, Length: 1, To: []byte(other)}},
		{"with an error", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, Err: "no", To: []byte(other)}},
		{"busy without a time", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Busy: true}},
		{"naming nobody", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100}},
		{"naming no peer ID", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, To: []byte("not a peer ID")}},
		{"busy naming a peer", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, Busy: true, To: []byte(other)}},
		{"naming itself", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, To: []byte("self")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := connectedPair(t)
			if string(tc.hdr.To) == "self" {
				tc.hdr.To = []byte(a.ID())
			}
			answerChunk(a, tc.hdr, make([]byte, tc.hdr.Length))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := b.Fetch(ctx, a.ID(), []ChunkWant{tc.want}, 1, func(int, []byte, error) error { return nil })
			var bad *BadDataError
			if !errors.As(err, &bad) {
				t.Fatalf("Fetch: %v, want bad data", err)
			}
		})
	}
}

// TestSlots: a node sends to uploadSlots peers at a time; a peer already
// served may open more streams; a slot given back goes to the next.
func TestSlots(t *testing.T) {
	var s slots
	var held []*slot
	for i := range uploadSlots {
		sl := &slot{s: &s, p: peer.ID(rune('a' + i))}
		if !sl.take() {
			t.Fatalf("peer %d of %d gets no slot", i+1, uploadSlots)
		}
		held = append(held, sl)
	}
	late := &slot{s: &s, p: "late"}
	if late.take() {
		t.Fatalf("a peer gets a slot while %d are taken", uploadSlots)
	}
	again := &slot{s: &s, p: held[0].p}
	if !again.take() || !again.take() {
		t.Fatalf("a peer being served gets no slot for a second stream")
	}
	again.close()
	if late.take() {
		t.Fatalf("a second stream's close freed a slot its peer still holds")
	}
	held[0].close()
	held[0].close() // twice: nothing more
	if !late.take() {
		t.Fatalf("a slot given back does not go to the next peer")
	}
	if len(s.serving) != uploadSlots {
		t.Errorf("%d peers served, want %d", len(s.serving), uploadSlots)
	}
	closed := &slot{s: &s, p: "closed"}
	closed.close()
	if closed.take() {
		t.Errorf("a closed stream took a slot")
	}
}

// TestHavesEveryAboutAChunkTime: gains go out within about a chunk time
// on 100 Mbit/s (each hop of a chunk through a room waits for them), and
// a subscriber's bounds let an honest peer's pushes through, a backlog of
// seconds included.
func TestHavesEveryAboutAChunkTime(t *testing.T) {
	chunkTime := time.Duration(float64(chunk.AvgSize) / (100e6 / 8) * float64(time.Second))
	if havesEvery > chunkTime {
		t.Errorf("gains wait up to %v, a chunk takes %v on 100 Mbit/s", havesEvery, chunkTime)
	}
	if honest := time.Second / havesEvery; HavesRate < honest {
		t.Errorf("a subscriber takes %d messages a second, an honest peer pushes %d", HavesRate, honest)
	}
	if backlog := time.Duration(HavesBurst) * havesEvery; backlog < time.Second {
		t.Errorf("a subscriber's burst is %v of an honest peer's pushes, want a second or more", backlog)
	}
}

// TestSlotsWait: a peer told every slot is taken is told to wait half of
// how long peers have held one lately, and at most what it is given,
// which it is told before any slot was given back.
func TestSlotsWait(t *testing.T) {
	var s slots
	const most = time.Second
	if got := s.wait(most); got != most {
		t.Errorf("before any slot was given back: %v, want %v", got, most)
	}
	for range 3 {
		sl := &slot{s: &s, p: "a"}
		if !sl.take() {
			t.Fatal("no slot")
		}
		h := s.serving["a"]
		h.since = time.Now().Add(-100 * time.Millisecond) // held 100 ms
		s.serving["a"] = h
		sl.close()
	}
	if got := s.wait(most); got < 50*time.Millisecond || got > 100*time.Millisecond {
		t.Errorf("after slots held 100 ms: %v, want about 50ms", got)
	}
	if got := s.wait(10 * time.Millisecond); got != 10*time.Millisecond {
		t.Errorf("given less: %v, want 10ms", got)
	}
}

// answerChunk makes n answer the first request of every chunks stream
// with hdr (its Seq set to the request's) and then body, as it is: a
// server that says what a test wants it to.
func answerChunk(n *Node, hdr ChunkHeader, body []byte) {
	n.Host().SetStreamHandler(ProtoChunks, func(st network.Stream) {
		defer st.Close()
		var req ChunkRequest
		if err := readMsg(bufio.NewReader(st), maxChunkHeader, &req); err != nil {
			return
		}
		hdr.Seq = req.Seq
		writeMsg(st, &hdr)
		st.Write(body)
	})
}

// TestWaitsStretch: a node whose links stand for faster ones
// (Config.TimeScale) stretches the waits it asks of peers and keeps
// between pushes by the same factor as its other waits: a simulated room
// that did not waited a sixth of a chunk time where a real one waits
// twenty.
func TestWaitsStretch(t *testing.T) {
	setForTest(t, &havesEvery, 10*time.Millisecond)
	setForTest(t, &havesRecheck, time.Hour)
	const scale = 30
	t.Run("busy", func(t *testing.T) {
		s, c, ss := connectedPair(t)
		s.serves.scale = scale
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pi := addTree(t, ss, map[string][]byte{"f": []byte("a chunk every slot is too busy to send")})
		ix, err := ss.ChunkIndexOf(pi.Path.Hash)
		if err != nil {
			t.Fatal(err)
		}
		var held []*slot
		hold := func(p peer.ID) {
			sl := &slot{s: &s.slots, p: p}
			if !sl.take() {
				t.Fatal("no slot free")
			}
			held = append(held, sl)
		}
		defer func() {
			for _, sl := range held {
				sl.close()
			}
		}()
		for i := range uploadSlots {
			hold(peer.ID(rune('a' + i)))
		}
		busy := func() time.Duration {
			t.Helper()
			var later *LaterError
			err := c.Fetch(ctx, s.ID(), []ChunkWant{{Chunk: ix[0].ID, Size: ix[0].Size, Defer: true}}, 1, func(_ int, _ []byte, err error) error { return err })
			if !errors.As(err, &later) || !later.Busy {
				t.Fatalf("every slot taken: %v, want busy", err)
			}
			return later.After
		}
		if got := busy(); got != scale*busyAfter {
			t.Fatalf("before any slot was given back: busy for %v, want %v", got, scale*busyAfter)
		}
		// Once a slot was held 200 ms and given back, the asker is told
		// to wait about half that, which the link set, not the scale.
		s.slots.mu.Lock()
		h := s.slots.serving["a"]
		h.since = time.Now().Add(-200 * time.Millisecond)
		s.slots.serving["a"] = h
		s.slots.mu.Unlock()
		held[0].close()
		hold("z")
		if got := busy(); got < 90*time.Millisecond || got > 200*time.Millisecond {
			t.Errorf("after a slot held 200 ms: busy for %v, want about 100ms", got)
		}
	})
	t.Run("haves", func(t *testing.T) {
		a, b, _ := connectedPair(t)
		a.serves.scale = scale
		h := nix.PathHash{7}
		a.AddPartial(&fakePartial{bits: map[nix.PathHash][]byte{h: {0, 0}}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		at := make(chan time.Time, 4)
		go b.SubscribeHaves(ctx, a.ID(), []nix.PathHash{h}, func(*Haves) error {
			at <- time.Now()
			return nil
		})
		arrived := func() time.Time {
			t.Helper()
			select {
			case t := <-at:
				return t
			case <-ctx.Done():
				t.Fatal("no have message")
			}
			return time.Time{}
		}
		first := arrived()
		a.GainedChunk(h, 3, nil)
		// The push waits scale×havesEvery from the first; allow for the
		// first's arrival lagging its sending.
		if gap, least := arrived().Sub(first), scale*havesEvery*2/3; gap < least {
			t.Errorf("a gain went out %v after the last push, want at least %v", gap, least)
		}
	})
}
