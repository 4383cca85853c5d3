package p2p

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// fakePartial holds chunks in memory, as a fetch in progress holds them
// in its spools.
type fakePartial struct {
	mu     sync.Mutex
	chunks map[chunk.ID][]byte
	bits   map[nix.PathHash][]byte
}

func (f *fakePartial) ReadChunk(_ context.Context, id chunk.ID, size uint32, dst []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.chunks[id]
	if !ok || len(c) != int(size) {
		return nil, errors.New("not held")
	}
	return dst[:copy(dst, c)], nil
}

func (f *fakePartial) Holds(h nix.PathHash) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bits[h]
	return append([]byte(nil), b...), ok
}

func connectedPair(t *testing.T) (a, b *Node, sa *store.Store) {
	t.Helper()
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	a, sa = testNode(t, ta)
	b, _ = testNode(t, tb)
	pair(a, b, ta, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Connect(ctx, a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	return a, b, sa
}

// treeElsewhere writes a file of data and returns it with the PathInfo
// it gets when added as name (worked out in a store of its own), for a
// test to add it to a node's store later.
func treeElsewhere(t *testing.T, data []byte, name string) (src string, pi *nix.PathInfo) {
	t.Helper()
	src = filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()
	if pi, err = elsewhere.AddTree(t.Context(), src, name); err != nil {
		t.Fatal(err)
	}
	return src, pi
}

// TestPartialChunksAndHaves: a node serves the chunks a fetch in progress
// holds (not in its store), and a subscriber hears what it holds at once
// and what it gains as it gains it.
func TestPartialChunksAndHaves(t *testing.T) {
	setForTest(t, &havesEvery, 10*time.Millisecond)
	setForTest(t, &havesRecheck, time.Hour) // a commit is heard, not polled for
	a, b, sa := connectedPair(t)
	data := []byte("a chunk verified, in a spool, of a path not committed yet")
	id := chunk.Sum(data)
	inProgress, other := nix.PathHash{7}, nix.PathHash{8}
	fp := &fakePartial{chunks: map[chunk.ID][]byte{}, bits: map[nix.PathHash][]byte{inProgress: {0b0000_0101, 0}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	fetch := func() error {
		return b.Fetch(ctx, a.ID(), []ChunkWant{{Chunk: id, Size: uint32(len(data))}}, 1, func(_ int, got []byte, err error) error {
			if err == nil && string(got) != string(data) {
				t.Errorf("got %q", got)
			}
			return err
		})
	}
	if err := fetch(); !errors.Is(err, ErrNotServed) {
		t.Fatalf("before the partial is registered: %v, want ErrNotServed", err)
	}
	remove := a.AddPartial(fp)
	fp.mu.Lock()
	fp.chunks[id] = data
	fp.mu.Unlock()
	if err := fetch(); err != nil {
		t.Fatalf("a chunk held by a fetch in progress: %v", err)
	}

	msgs := make(chan *Haves, 16)
	go b.SubscribeHaves(ctx, a.ID(), []nix.PathHash{other, inProgress}, func(m *Haves) error {
		msgs <- m
		return nil
	})
	next := func() HaveEntry {
		t.Helper()
		select {
		case m := <-msgs:
			if len(m.Entries) != 1 {
				t.Fatalf("entries %+v, want one", m.Entries)
			}
			return m.Entries[0]
		case <-ctx.Done():
			t.Fatal("no have message")
		}
		return HaveEntry{}
	}
	if e := next(); e.Path != 1 || string(e.Bits) != string([]byte{0b0000_0101, 0}) {
		t.Errorf("first message: %+v, want the bitfield of path 1", e)
	}
	a.GainedChunk(inProgress, 9, nil)
	a.GainedChunk(nix.PathHash{9}, 1, nil) // not subscribed: not pushed
	if e := next(); e.Path != 1 || len(e.Add) != 1 || e.Add[0] != 9 {
		t.Errorf("after a gain: %+v, want chunk 9 of path 1 added", e)
	}
	// A gain the subscriber holds itself is not said to it; one it lacks is.
	a.GainedChunk(inProgress, 10, []peer.ID{a.ID(), b.ID()})
	a.GainedChunk(inProgress, 11, []peer.ID{a.ID()})
	if e := next(); e.Path != 1 || len(e.Add) != 1 || e.Add[0] != 11 {
		t.Errorf("after gains of chunks 10 (held by the subscriber) and 11: %+v, want only chunk 11 added", e)
	}
	remove()
	if err := fetch(); !errors.Is(err, ErrNotServed) {
		t.Fatalf("after the partial went: %v, want ErrNotServed", err)
	}

	// A fetch that commits a path says so (Gained), and
	// the subscriber hears All at once, not at the next look at the store.
	src, pi := treeElsewhere(t, data, "committed")
	go b.SubscribeHaves(ctx, a.ID(), []nix.PathHash{pi.Path.Hash}, func(m *Haves) error {
		msgs <- m
		return nil
	})
	time.Sleep(50 * time.Millisecond) // subscribed; a holds nothing of it
	if _, err := sa.AddTree(ctx, src, "committed"); err != nil {
		t.Fatal(err)
	}
	a.Gained(pi.Path.Hash)
	if e := next(); e.Path != 0 || !e.All {
		t.Errorf("after a commit: %+v, want path 0 whole", e)
	}
}

// fakeHavesServer answers a subscription on a raw host with the messages
// send writes.
func fakeHavesServer(t *testing.T, victim *Node, send func(w *bufio.Writer) error) peer.ID {
	t.Helper()
	h := rawHost(t)
	h.SetStreamHandler(ProtoHaves, func(st network.Stream) {
		defer st.Reset()
		var req HavesRequest
		if err := readMsg(bufio.NewReader(st), maxRequest, &req); err != nil {
			return
		}
		bw := bufio.NewWriter(st)
		send(bw)
		bw.Flush()
		time.Sleep(time.Second)
	})
	victim.gater.trust.Allow(h.ID(), "attacker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := victim.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return h.ID()
}

// TestHavesFloodAndLies: a peer that pushes have messages faster than
// HavesRate allows, or speaks of paths not subscribed to, breaks the
// protocol: the subscription ends with ErrProtocol after a bounded number
// of messages.
func TestHavesFloodAndLies(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(w *bufio.Writer) error
		max  int // messages the subscriber may take, besides HavesRate a second
		why  string
	}{
		{"flood", func(w *bufio.Writer) error {
			for range 40 * HavesBurst {
				if err := writeMsg(w, &Haves{Entries: []HaveEntry{{Path: 0, Add: []uint32{1}}}}); err != nil {
					return err
				}
			}
			return nil
		}, HavesBurst, "floods have messages"},
		{"a path not subscribed to", func(w *bufio.Writer) error {
			return writeMsg(w, &Haves{Entries: []HaveEntry{{Path: 1, All: true}}})
		}, 0, "speaks of path 1 of a subscription to 1"},
		{"over the cap", func(w *bufio.Writer) error {
			return writeMsg(w, &Haves{Entries: []HaveEntry{{Path: 0, Add: make([]uint32, MaxHaveAdds+1)}}})
		}, 0, "protocol violation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim, _ := testNode(t, NewTrustGroup(nil))
			p := fakeHavesServer(t, victim, tc.send)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n := 0
			began := time.Now()
			err := victim.SubscribeHaves(ctx, p, []nix.PathHash{{1}}, func(*Haves) error { n++; return nil })
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("subscription ended with %v, want a protocol violation saying %q", err, tc.why)
			}
			if most := tc.max + int(time.Since(began).Seconds()*HavesRate) + 1; n > most {
				t.Errorf("took %d messages, want at most %d", n, most)
			}
		})
	}
}

// TestHavesRecheck: a path that becomes valid without a fetch here (added
// by hand, imported) is found by the node's periodic look at the store,
// and every subscription to it hears All.
func TestHavesRecheck(t *testing.T) {
	setForTest(t, &havesEvery, 10*time.Millisecond)
	setForTest(t, &havesRecheck, 50*time.Millisecond)
	a, b, sa := connectedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, pi := treeElsewhere(t, []byte("added by hand"), "added")
	whole := make(chan int, 4)
	for i := range 2 {
		go b.SubscribeHaves(ctx, a.ID(), []nix.PathHash{{9}, pi.Path.Hash}, func(m *Haves) error {
			for _, e := range m.Entries {
				if e.All && e.Path == 1 {
					whole <- i
				}
			}
			return nil
		})
	}
	time.Sleep(100 * time.Millisecond) // subscribed, and looked at the store: a holds nothing of it
	if len(whole) > 0 {
		t.Fatal("a path a lacks was said whole")
	}
	if _, err := sa.AddTree(ctx, src, "added"); err != nil {
		t.Fatal(err)
	}
	heard := map[int]bool{}
	for len(heard) < 2 {
		select {
		case i := <-whole:
			heard[i] = true
		case <-ctx.Done():
			t.Fatalf("subscriptions that heard the path whole: %v, want both", heard)
		}
	}
}

// TestHavesStalledReader: a subscriber that stops reading for a while (its
// fetch busy, the machine loaded) then reads an honest peer's backlog of
// pushes back to back; that is not a flood.
func TestHavesStalledReader(t *testing.T) {
	setForTest(t, &havesRecheck, time.Hour)
	a, b, _ := connectedPair(t)
	h := nix.PathHash{7}
	a.AddPartial(&fakePartial{bits: map[nix.PathHash][]byte{h: make([]byte, 512)}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() { // an honest peer gaining a chunk every havesEvery
		for i := 0; ctx.Err() == nil; i = (i + 1) % 4096 {
			a.GainedChunk(h, i, nil)
			time.Sleep(havesEvery)
		}
	}()
	n := 0
	err := b.SubscribeHaves(ctx, a.ID(), []nix.PathHash{h}, func(*Haves) error {
		if n++; n == 2 {
			time.Sleep(time.Second) // stalled: pushes queue up
		}
		return nil
	})
	if errors.Is(err, ErrProtocol) {
		t.Fatalf("after a 1 s stall, %d messages in: %v", n, err)
	}
}

// deadlineStream records the write deadlines set on it.
type deadlineStream struct {
	network.Stream
	set []time.Time
}

func (s *deadlineStream) SetWriteDeadline(t time.Time) error {
	s.set = append(s.set, t)
	return nil
}

// TestWriteDeadlineExtends: a haves subscription writes hundreds of
// small pushes a second; its write deadline is set again only once less
// than half of it is left, so a write still fails after at most the
// timeout and at least half of it.
func TestWriteDeadlineExtends(t *testing.T) {
	const timeout = 200 * time.Millisecond
	st := &deadlineStream{}
	var d writeDeadline
	d.extend(st, timeout)
	d.extend(st, timeout) // well ahead: left as it is
	if len(st.set) != 1 {
		t.Fatalf("deadline set %d times by two writes back to back, want 1", len(st.set))
	}
	time.Sleep(timeout/2 + 20*time.Millisecond)
	d.extend(st, timeout)
	if len(st.set) != 2 {
		t.Fatalf("deadline set %d times, want 2: less than half of it was left", len(st.set))
	}
	if left := time.Until(st.set[1]); left <= timeout/2 || left > timeout {
		t.Errorf("deadline moved to %v from now, want within (%v, %v]", left, timeout/2, timeout)
	}
}
