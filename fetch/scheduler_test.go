package fetch

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// testItem is a path of chunks chunks of 1 KiB, with the given providers
// (the first describes it) and references.
func testItem(n byte, chunks int, providers []peer.ID, refs ...*item) *item {
	p := nix.Path{Hash: nix.PathHash{n}, Name: fmt.Sprint("p", n)}
	var index chunk.Index
	for i := range chunks {
		index = append(index, chunk.Ref{ID: chunk.ID{n, byte(i)}, Size: 1 << 10})
	}
	info := &nix.PathInfo{Path: p, NarSize: index.NarSize()}
	for _, r := range refs {
		info.References = append(info.References, r.info.Path)
	}
	return &item{info: info, index: index, offs: index.Offsets(), infoFrom: providers[0], providers: providers}
}

func testPlan(items ...*item) *plan {
	pl := &plan{byHash: map[nix.PathHash]*item{}, items: items}
	for _, it := range items {
		pl.byHash[it.info.Path.Hash] = it
	}
	return pl
}

// testScheduler is a scheduler over items with every chunk missing.
func testScheduler(items ...*item) (*scheduler, []*itemState) {
	s := newScheduler(testPlan(items...), "/nix/store", 16)
	var sts []*itemState
	for _, it := range items {
		st := &itemState{it: it}
		missing := make([]int, len(it.index))
		for i := range missing {
			missing[i] = i
		}
		s.reset(st, nil, missing, 0, 0)
		s.addReferrer(st)
		sts = append(sts, st)
	}
	s.budget = 1 << 40
	return s, sts
}

// firstQueued is the first want pick could hand out, in fetch order.
func firstQueued(s *scheduler) *want {
	for _, st := range s.order {
		for _, w := range st.wants {
			if bit(st.queued, w.i) {
				return w
			}
		}
	}
	return nil
}

func chunksOf(batch []*want) []string {
	var out []string
	for _, w := range batch {
		out = append(out, fmt.Sprintf("%s/%d", w.st.it.info.Path.Name, w.ref.ID[1]))
	}
	return out
}

// fast gives ps a measured rate high enough not to bound its batches.
func fast(ps *peerState) {
	ps.first = time.Unix(0, 0)
	ps.last = ps.first.Add(time.Second)
	ps.bytes = 1 << 30
}

func TestSchedulerTake(t *testing.T) {
	const a, b, c = peer.ID("a"), peer.ID("b"), peer.ID("c")
	for _, tc := range []struct {
		name  string
		setup func(s *scheduler)
		peer  peer.ID
		n     int
		want  string // chunks handed out, "" for none
		stop  bool
	}{
		{name: "in plan order", peer: a, n: 3, want: "p1/0 p1/1 p1/2"},
		{name: "shared among live peers", setup: func(s *scheduler) {
			s.addStream(b)
			fast(s.peers.get(a)) // else its first batch is firstBatch
		}, peer: a, n: 64, want: "p1/0 p1/1 p1/2 p1/3 p1/4 p1/5"}, // 12 chunks, 2 peers
		{name: "a first batch is small", peer: a, n: 64, want: "p1/0 p1/1 p1/2 p1/3"},
		{name: "only what the peer provides, at least 4", peer: c, n: 3, want: "p2/0 p2/1 p2/2 p2/3"},
		{name: "not what it lacks", setup: func(s *scheduler) { s.lacks(c, s.items[nix.PathHash{2}].wants[0]) }, peer: c, n: 3, want: ""},
		{name: "dropped peer stops", setup: func(s *scheduler) { s.dropPeer(a, "test") }, peer: a, n: 3, stop: true},
		{name: "failed transfer stops", setup: func(s *scheduler) { s.fail(errors.New("boom")) }, peer: a, n: 3, stop: true},
		{name: "endgame duplicates in-flight chunks", setup: func(s *scheduler) {
			s.take(a, 64, time.Now()) // a holds everything it serves, nothing is pending
		}, peer: c, n: 4, want: "p2/0 p2/1 p2/2 p2/3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p1 := testItem(1, 8, []peer.ID{a, b})
			p2 := testItem(2, 4, []peer.ID{a, c})
			s, _ := testScheduler(p1, p2)
			s.addStream(a)
			if tc.setup != nil {
				tc.setup(s)
			}
			batch, stop := s.take(tc.peer, tc.n, time.Now())
			if got := strings.Join(chunksOf(batch), " "); got != tc.want || stop != tc.stop {
				t.Errorf("take(%s, %d) = %q, stop %v; want %q, stop %v", tc.peer, tc.n, got, stop, tc.want, tc.stop)
			}
		})
	}
}

func TestSchedulerDropPeer(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	t.Run("bad chunk drops and re-queues elsewhere", func(t *testing.T) {
		s, _ := testScheduler(testItem(1, 4, []peer.ID{b, a}))
		s.addStream(a)
		s.addStream(b)
		batch, _ := s.take(a, 2, time.Now())
		s.release(a, batch, 0)
		out, now, _ := s.batchFailed(a, &p2p.BadDataError{Peer: a, Detail: "chunk hash mismatch"})
		if !out || now != "sent bad data: chunk hash mismatch" || s.peers[a].bad != 1 {
			t.Fatalf("batchFailed: out %v, dropped now %q, bad %d", out, now, s.peers[a].bad)
		}
		got, _ := s.take(b, 64, time.Now())
		if want := "p1/0 p1/1 p1/2 p1/3"; strings.Join(chunksOf(got), " ") != want {
			t.Errorf("b takes %v, want %s (a's chunks first)", chunksOf(got), want)
		}
		if s.err != nil {
			t.Errorf("transfer failed: %v", s.err)
		}
	})
	t.Run("stall drops at once, other errors after three", func(t *testing.T) {
		s, _ := testScheduler(testItem(1, 4, []peer.ID{b, a}))
		for i, want := range []bool{false, false, true} {
			out, _, backoff := s.batchFailed(a, errors.New("stream reset"))
			if out != want || backoff != time.Duration(200*(i+1))*time.Millisecond {
				t.Errorf("failure %d: out %v backoff %v", i+1, out, backoff)
			}
		}
		if out, now, _ := s.batchFailed(b, errStalled); !out || now != "stalled" {
			t.Errorf("stall: out %v, dropped now %q", out, now)
		}
	})
	t.Run("nobody left fails", func(t *testing.T) {
		s, _ := testScheduler(testItem(1, 4, []peer.ID{a}))
		s.dropPeer(a, "stalled")
		if s.err == nil || !strings.Contains(s.err.Error(), "no peer left to fetch /nix/store/") || !strings.Contains(s.err.Error(), a.String()+": stalled") {
			t.Errorf("err = %v", s.err)
		}
	})
	t.Run("describer gone makes the item stale", func(t *testing.T) {
		s, sts := testScheduler(testItem(1, 4, []peer.ID{a, b}))
		s.lacks(b, sts[0].wants[0])
		s.dropPeer(a, "sent bad data")
		if s.err != nil || sts[0].phase != stale {
			t.Fatalf("err %v, phase %d", s.err, sts[0].phase)
		}
		st, _, _ := s.nextIngest()
		if st != sts[0] || s.held != 0 {
			t.Errorf("nextIngest = %v (held %d), want the stale item, holding nothing", st, s.held)
		}
	})
	t.Run("a stale item whose chunks then arrive is handed out once, to be described again", func(t *testing.T) {
		s, sts := testScheduler(testItem(1, 4, []peer.ID{a, b}))
		s.lacks(b, sts[0].wants[0])
		s.dropPeer(a, "sent bad data")
		deliverAll(s, b, sts[0])
		if st, _, _ := s.nextIngest(); st != sts[0] || st.phase != redescribing {
			t.Fatalf("nextIngest = %v, want the stale item to describe again", st)
		}
		if st, _, _ := s.nextIngest(); st != nil {
			t.Errorf("the item was handed out twice")
		}
	})
}

// deliverAll delivers every chunk of st from p.
func deliverAll(s *scheduler, p peer.ID, st *itemState) {
	for _, w := range st.wants {
		if s.claim(w) {
			s.delivered(p, w, int(w.ref.Size), time.Unix(0, 0))
		}
	}
}

type fakeStaged struct{ name string }

func (fakeStaged) Commit() (*nix.PathInfo, error) { return nil, nil }
func (fakeStaged) Discard()                       {}

func TestSchedulerNextIngest(t *testing.T) {
	const a = peer.ID("a")
	// dep is 4 KiB, top 8 KiB and refers to dep, other 2 KiB; fresh for
	// each case, as a commit marks an item valid.
	items := func() (dep, top, other *item) {
		dep = testItem(1, 4, []peer.ID{a})
		return dep, testItem(2, 8, []peer.ID{a}, dep), testItem(3, 2, []peer.ID{a})
	}

	t.Run("committable first, then within budget", func(t *testing.T) {
		s, sts := testScheduler(items())
		s.budget = 9 << 10
		deliverAll(s, a, sts[1])
		deliverAll(s, a, sts[2])
		st, _, _ := s.nextIngest()
		if st != sts[2] {
			t.Fatalf("first = %s, want p3 (its references are valid)", st.it.info.Path.Name)
		}
		// top may be unpacked ahead only if it fits beside p3: 2+8 > 9 KiB.
		if st, _, stop := s.nextIngest(); st != nil || stop {
			t.Fatalf("second = %v, stop %v; want to wait for room", st, stop)
		}
		s.committed(sts[2])
		if st, _, _ := s.nextIngest(); st != sts[1] || s.held != 8<<10 {
			t.Fatalf("after commit: %v, held %d", st, s.held)
		}
		if s.stage(sts[1], fakeStaged{"top"}) {
			t.Fatal("top staged while its reference is not valid: it must wait")
		}
	})
	t.Run("in order: nothing ahead of its references, however much room", func(t *testing.T) {
		s, sts := testScheduler(items())
		s.inOrder = true
		deliverAll(s, a, sts[1])
		if st, _, stop := s.nextIngest(); st != nil || stop {
			t.Fatalf("top alone = %v, stop %v; want to wait for dep", st, stop)
		}
		deliverAll(s, a, sts[0])
		if st, _, _ := s.nextIngest(); st != sts[0] {
			t.Fatalf("next = %v, want dep", st)
		}
		if st, _, stop := s.nextIngest(); st != nil || stop {
			t.Fatalf("before dep commits: %v, stop %v; want to wait", st, stop)
		}
		s.committed(sts[0])
		if st, _, _ := s.nextIngest(); st != sts[1] {
			t.Fatalf("after dep: %v, want top", st)
		}
	})
	t.Run("evicts items unpacked ahead for a committable one", func(t *testing.T) {
		s, sts := testScheduler(items())
		s.budget = 9 << 10
		deliverAll(s, a, sts[1])
		st, _, _ := s.nextIngest()
		if st != sts[1] {
			t.Fatalf("first = %v, want top, unpacked ahead", st)
		}
		if s.stage(sts[1], fakeStaged{"top"}) {
			t.Fatal("top committable before dep")
		}
		deliverAll(s, a, sts[0]) // dep: 8+4 > 9 KiB, so top's tree must go
		st, discard, _ := s.nextIngest()
		if st != sts[0] || len(discard) != 1 || s.held != 4<<10 {
			t.Fatalf("next = %v, discard %v, held %d", st, discard, s.held)
		}
		if next := s.committed(sts[0]); len(next) != 0 {
			t.Fatalf("committed dep: %v to commit, want none (top was evicted)", next)
		}
		if st, _, _ := s.nextIngest(); st != sts[1] {
			t.Fatalf("after dep: %v, want top again", st)
		}
	})
	t.Run("a NAR that proves its description a lie no longer counts against the budget", func(t *testing.T) {
		dep, top, other := items()
		s, sts := testScheduler(dep, top, other)
		s.budget = 9 << 10
		deliverAll(s, a, sts[0])
		if st, _, _ := s.nextIngest(); st != sts[0] || s.held != 4<<10 {
			t.Fatalf("first = %v, held %d; want dep, 4 KiB", st, s.held)
		}
		s.lied(a, "lied")
		s.redescribe(sts[0], testItem(1, 4, []peer.ID{a}))
		if s.held != 0 || sts[0].phase != redescribing {
			t.Fatalf("after the lie: held %d, phase %d; want 0, redescribing", s.held, sts[0].phase)
		}
		s.abandon(sts[0]) // as ingest does for a stale item: holds nothing twice
		if s.held != 0 {
			t.Fatalf("abandoned again: held %d", s.held)
		}
	})
	t.Run("commit of the last reference commits the referrer", func(t *testing.T) {
		dep, top, _ := items()
		s, sts := testScheduler(dep, top)
		deliverAll(s, a, sts[1])
		deliverAll(s, a, sts[0])
		first, _, _ := s.nextIngest()
		second, _, _ := s.nextIngest()
		if first != sts[0] || second != sts[1] {
			t.Fatalf("order %s, %s; want dep first", first.it.info.Path.Name, second.it.info.Path.Name)
		}
		s.stage(sts[1], fakeStaged{"top"})
		if next := s.committed(sts[0]); len(next) != 1 || next[0].st != sts[1] {
			t.Fatalf("committed dep: %v", next)
		}
		s.committed(sts[1])
		if st, _, stop := s.nextIngest(); st != nil || !stop {
			t.Errorf("after all: %v, stop %v", st, stop)
		}
	})
}

// TestFetchOrder: a store that stages ahead fetches the plan rotated to a
// random start; one that adds paths only after their references (Nix's)
// fetches references first, or every path above the start would wait for
// the end of the transfer.
func TestFetchOrder(t *testing.T) {
	ps := []peer.ID{"a"}
	p0 := testItem(0, 1, ps)
	p1 := testItem(1, 1, ps, p0)
	p2 := testItem(2, 1, ps, p1)
	plan := []*item{p0, p1, p2}
	names := func(items []*item) string {
		var out []string
		for _, it := range items {
			out = append(out, it.info.Path.Name)
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		inOrder bool
		want    string
	}{
		{inOrder: false, want: "p2 p0 p1"},
		{inOrder: true, want: "p0 p1 p2"},
	} {
		got := fetchOrder(plan, tc.inOrder, func(int) int { return 2 })
		if names(got) != tc.want {
			t.Errorf("inOrder=%v: fetch order %q, want %q", tc.inOrder, names(got), tc.want)
		}
	}
	if names(plan) != "p0 p1 p2" {
		t.Errorf("fetchOrder changed the plan: %q", names(plan))
	}
}

// TestSchedulerStreams: an idle ingest worker is handed the first large
// item being fetched, to unpack as its chunks arrive (one at a time, held
// on the disk budget from then); its prefix is what is in from its
// start; once complete it stays with its worker instead of being queued.
// A streamed unpacking that failed early leaves the item to the ordinary
// path; an item orphaned while streamed goes to be described again.
func TestSchedulerStreams(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	setup := func() (*scheduler, *itemState, *itemState) {
		big, small := testItem(1, 1100, []peer.ID{a, b}), testItem(2, 4, []peer.ID{a, b})
		s, sts := testScheduler(big, small)
		s.streamOK = true
		for _, st := range sts {
			st.spool = &spool{}
		}
		s.peers.get(a)
		return s, sts[0], sts[1]
	}
	deliver := func(s *scheduler, w *want) {
		if s.claim(w) {
			s.delivered(a, w, int(w.ref.Size), time.Unix(0, 0))
		}
	}
	t.Run("streamed to the end", func(t *testing.T) {
		s, big, small := setup()
		if st, _, _ := s.nextIngest(); st != nil {
			t.Fatalf("nothing in yet, handed %s", st.it.info.Path.Name)
		}
		deliver(s, big.wants[1])
		if big.prefix() != 0 {
			t.Fatalf("prefix %d with the first chunk missing", big.prefix())
		}
		if st, _, _ := s.nextIngest(); st != nil {
			t.Fatalf("nothing begun at the start, handed %s", st.it.info.Path.Name)
		}
		deliver(s, big.wants[0])
		if want := big.it.offs[2]; big.prefix() != want {
			t.Fatalf("prefix %d, want %d", big.prefix(), want)
		}
		st, _, _ := s.nextIngest()
		if st != big || !(s.streamed == big) || big.phase != fetching || s.held != big.it.info.NarSize {
			t.Fatalf("handed %v (streaming %v, phase %v, held %d)", st, (s.streamed == big), big.phase, s.held)
		}
		if st, _, _ := s.nextIngest(); st != nil {
			t.Fatalf("a second item streamed: %s", st.it.info.Path.Name)
		}
		deliverAll(s, a, small)
		if st, _, _ := s.nextIngest(); st != small || small.phase != unpacking {
			t.Fatalf("the complete small item was not handed out: %v", st)
		}
		deliverAll(s, a, big)
		if big.phase != unpacking || slices.Contains(s.ready, big) {
			t.Fatalf("complete streamed item: phase %v, queued %v", big.phase, slices.Contains(s.ready, big))
		}
		if !s.streamEnded(big, big.desc, false) || (s.streamed == big) {
			t.Fatal("streamEnded: not complete")
		}
	})
	t.Run("one at a time", func(t *testing.T) {
		first, second := testItem(1, 1100, []peer.ID{a}), testItem(2, 1100, []peer.ID{a})
		s, sts := testScheduler(first, second)
		s.streamOK = true
		for _, st := range sts {
			st.spool = &spool{}
		}
		deliver(s, sts[1].wants[0])
		if st, _, _ := s.nextIngest(); st != sts[1] {
			t.Fatal("the begun item was not streamed")
		}
		deliver(s, sts[0].wants[0]) // the first in plan order begins now
		if st, _, _ := s.nextIngest(); st != nil {
			t.Fatalf("a second item streamed: %s", st.it.info.Path.Name)
		}
	})
	t.Run("failed early", func(t *testing.T) {
		s, big, _ := setup()
		deliver(s, big.wants[0])
		if st, _, _ := s.nextIngest(); st != big {
			t.Fatal("not streamed")
		}
		if s.streamEnded(big, big.desc, true) || s.held != 0 || !big.noStream {
			t.Fatalf("after an early failure: held %d, noStream %v", s.held, big.noStream)
		}
		if st, _, _ := s.nextIngest(); st != nil {
			t.Fatal("streamed again after failing")
		}
		deliverAll(s, a, big)
		if st, _, _ := s.nextIngest(); st != big || big.phase != unpacking {
			t.Fatalf("the complete item was not handed out the ordinary way: %v", st)
		}
	})
	t.Run("orphaned", func(t *testing.T) {
		s, big, _ := setup()
		deliver(s, big.wants[0])
		if st, _, _ := s.nextIngest(); st != big {
			t.Fatal("not streamed")
		}
		// b lacks the chunks of a's description but may describe it again.
		s.peers.get(b).lacks = map[nix.PathHash]bool{big.it.info.Path.Hash: true}
		s.dropPeer(a, "gone")
		s.checkProviders()
		if big.phase != stale || (s.streamed == big) || s.held != 0 || !slices.Contains(s.ready, big) {
			t.Fatalf("orphaned streamed item: phase %v, streaming %v, held %d", big.phase, (s.streamed == big), s.held)
		}
		// Another worker describes it again, and it is streamed anew
		// before the first worker ends: that end changes nothing.
		was := big.desc
		s.ready = slices.DeleteFunc(s.ready, func(st *itemState) bool { return st == big })
		s.abandon(big)
		missing := make([]int, len(big.it.index))
		for i := range missing {
			missing[i] = i
		}
		s.reset(big, &spool{}, missing, 0, 0)
		s.delivered(b, big.wants[0], int(big.wants[0].ref.Size), time.Unix(0, 0))
		big.wants[0].done = true
		if st, _, _ := s.nextIngest(); st != big || !(s.streamed == big) {
			t.Fatal("the new description was not streamed")
		}
		if s.streamEnded(big, was, true) || !(s.streamed == big) || big.noStream || s.held != big.it.info.NarSize {
			t.Fatalf("the first worker's end changed the new stream: streaming %v, held %d", (s.streamed == big), s.held)
		}
	})
}
