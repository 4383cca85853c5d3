package p2p

import (
	"bufio"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
)

// TestServesClaim: a chunk goes to one asker per serveWindow; others who
// may be deferred are told how long to wait, others are served.
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
		{"another asker, after the window", b, true, serveWindow, up, 0},
		{"another asker, the first gone", b, true, 500 * time.Millisecond, down, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s serves
			if later, _ := s.claim(a, x, true, t0, up); later != 0 {
				t.Fatalf("the first asker is deferred by %v", later)
			}
			later, _ := s.claim(tc.asker, x, tc.mayDefer, t0.Add(tc.at), tc.connected)
			if later != tc.later {
				t.Errorf("later = %v, want %v", later, tc.later)
			}
		})
	}

	t.Run("an unsent claim is undone", func(t *testing.T) {
		var s serves
		_, undo := s.claim(a, x, true, t0, up)
		undo()
		if later, _ := s.claim(b, x, true, t0, up); later != 0 {
			t.Errorf("deferred by a chunk never sent: %v", later)
		}
	})
	t.Run("the window starts when the chunk leaves", func(t *testing.T) {
		var s serves
		s.claim(a, x, true, t0, up)
		s.sent(a, x, t0.Add(5*time.Second)) // queued behind others for 5 s
		if later, _ := s.claim(b, x, true, t0.Add(6*time.Second), up); later != serveWindow-time.Second {
			t.Errorf("later = %v, want %v", later, serveWindow-time.Second)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var s serves
		for i := range maxServes + 10 {
			id := chunk.Sum([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
			s.claim(a, id, true, t0, up)
		}
		if len(s.m) > maxServes {
			t.Errorf("%d serves remembered, cap %d", len(s.m), maxServes)
		}
		// Once the window passed, old serves make room.
		s.claim(a, x, true, t0.Add(serveWindow), up)
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
	if err := fetch(c, want); !errors.As(err, &later) || later.After <= 0 || later.After > serveWindow {
		t.Fatalf("the second follower asking at once: %v, want to be told to come back within %v", err, serveWindow)
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
// or with data, is bad data.
func TestLaterRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		want ChunkWant
		hdr  ChunkHeader
	}{
		{"to a request that did not allow it", ChunkWant{Size: 1}, ChunkHeader{Later: 100}},
		{"with data", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, Length: 1}},
		{"with an error", ChunkWant{Size: 1, Defer: true}, ChunkHeader{Later: 100, Err: "no"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := connectedPair(t)
			a.Host().SetStreamHandler(ProtoChunks, func(st network.Stream) {
				defer st.Close()
				var req ChunkRequest
				if err := readMsg(bufio.NewReader(st), maxChunkHeader, &req); err != nil {
					return
				}
				hdr := tc.hdr
				hdr.Seq = req.Seq
				writeMsg(st, &hdr)
				st.Write(make([]byte, hdr.Length))
			})
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
