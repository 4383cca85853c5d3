package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
)

// fakePeers serves chunks through func fields, one per peer: no libp2p.
type fakePeers struct {
	serve map[peer.ID]func(ctx context.Context, wants []p2p.ChunkWant, got func(int, []byte, error) error) error
}

// FetchMore serves wants, asking more for what to add as the last chunk
// asked so far arrives (before got sees it, as p2p.Node's does at half),
// and numbers the answers on.
func (f *fakePeers) FetchMore(ctx context.Context, p peer.ID, wants []p2p.ChunkWant, window int, more func() []p2p.ChunkWant, got func(int, []byte, error) error) error {
	for at := 0; len(wants) > 0; {
		from, n := at, len(wants)
		var next []p2p.ChunkWant
		err := f.serve[p](ctx, wants, func(i int, b []byte, err error) error {
			if i == n-1 && b != nil && more != nil {
				next = more()
			}
			return got(from+i, b, err)
		})
		if err != nil {
			return err
		}
		at, wants = at+n, next
	}
	return nil
}

func (f *fakePeers) Protect(peer.ID, string)              {}
func (f *fakePeers) Unprotect(peer.ID, string)            {}
func (f *fakePeers) Compressed(peer.ID) (wire, raw int64) { return 0, 0 }

var _ chunkPeers = (*fakePeers)(nil)

// fakeStore has no chunks; it stages a NAR when it is the expected bytes,
// and records the order of commits.
type fakeStore struct {
	nars  map[nix.PathHash][]byte
	stage func(info *nix.PathInfo) error // if set, may refuse a NAR that is right

	mu        sync.Mutex
	committed []string
}

func (s *fakeStore) ReadChunk(context.Context, chunk.ID, uint32) ([]byte, error) {
	return nil, errors.New("no such chunk here")
}

func (s *fakeStore) StageNAR(_ context.Context, info *nix.PathInfo, _ chunk.Index, r io.Reader) (staged, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(info.NarSize)))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b, s.nars[info.Path.Hash]) {
		return nil, fmt.Errorf("%w for %s", nix.ErrHashMismatch, info.Path.Name)
	}
	if s.stage != nil {
		if err := s.stage(info); err != nil {
			return nil, err
		}
	}
	return fakeCommit{s, info.Path.Name}, nil
}

type fakeCommit struct {
	s    *fakeStore
	name string
}

func (c fakeCommit) Commit() (*nix.PathInfo, error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.committed = append(c.s.committed, c.name)
	return nil, nil
}
func (fakeCommit) Discard() {}

// nar makes an item of n chunks of random sizes and its NAR bytes.
func nar(r *rand.Rand, id byte, n int, providers []peer.ID, refs ...*item) (*item, []byte, map[chunk.ID][]byte) {
	var data []byte
	var index chunk.Index
	chunks := map[chunk.ID][]byte{}
	for range n {
		c := make([]byte, 1<<10+r.IntN(4<<10))
		for i := range c {
			c[i] = byte(r.Uint32())
		}
		ref := chunk.Ref{ID: chunk.Sum(c), Size: uint32(len(c))}
		index = append(index, ref)
		chunks[ref.ID] = c
		data = append(data, c...)
	}
	it := testItem(id, 0, providers, refs...)
	it.index, it.offs, it.info.NarSize = index, index.Offsets(), uint64(len(data))
	return it, data, chunks
}

// TestTransferThroughFaults drives a whole transfer in a synctest bubble,
// on fake time, with fake peers: one honest and slow, one that sends a bad
// chunk, one that stalls, one whose streams keep failing, one that lacks
// what it claimed, and one whose chunk index does not produce its NAR.
// Every path must be committed references first, from the honest peer's
// bytes, with each faulty peer dropped for the right reason.
func TestTransferThroughFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const honest, bad, stall, flaky, lacking, liar = peer.ID("honest"), peer.ID("bad"), peer.ID("stall"),
			peer.ID("flaky"), peer.ID("lacking"), peer.ID("liar")
		all := []peer.ID{honest, bad, stall, flaky, lacking}
		r := rand.New(rand.NewPCG(1, 2))
		chunks := map[chunk.ID][]byte{}
		nars := map[nix.PathHash][]byte{}
		add := func(it *item, data []byte, cs map[chunk.ID][]byte) *item {
			nars[it.info.Path.Hash] = data
			for id, c := range cs {
				chunks[id] = c
			}
			return it
		}
		lib := add(nar(r, 1, 40, all))
		app := add(nar(r, 2, 30, all, lib))
		// cfg is described by liar, whose description the store refuses
		// once; asked again, honest describes it.
		cfg := add(nar(r, 3, 10, append([]peer.ID{liar}, all...), app))
		pl := testPlan(lib, app, cfg)

		serve := func(delay time.Duration) func(context.Context, []p2p.ChunkWant, func(int, []byte, error) error) error {
			return func(ctx context.Context, wants []p2p.ChunkWant, got func(int, []byte, error) error) error {
				for i, w := range wants {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(delay):
					}
					if err := got(i, chunks[w.Chunk], nil); err != nil {
						return err
					}
				}
				return nil
			}
		}
		net := &fakePeers{serve: map[peer.ID]func(context.Context, []p2p.ChunkWant, func(int, []byte, error) error) error{
			// honest is slow enough that the stall timeout passes before
			// the others are done: the stalled peer must be dropped, not
			// merely outlived.
			honest: serve(200 * time.Millisecond),
			liar:   serve(200 * time.Millisecond),
			bad: func(ctx context.Context, wants []p2p.ChunkWant, got func(int, []byte, error) error) error {
				return &p2p.BadDataError{Peer: "bad", Detail: "chunk " + wants[0].Chunk.String() + " does not hash to its ID"}
			},
			stall: func(ctx context.Context, _ []p2p.ChunkWant, _ func(int, []byte, error) error) error {
				<-ctx.Done()
				return ctx.Err()
			},
			flaky: func(context.Context, []p2p.ChunkWant, func(int, []byte, error) error) error {
				return errors.New("stream reset")
			},
			lacking: func(_ context.Context, wants []p2p.ChunkWant, got func(int, []byte, error) error) error {
				for i := range wants {
					if err := got(i, nil, errors.New("not found")); err != nil {
						return err
					}
				}
				return nil
			},
		}}
		st := &fakeStore{nars: nars}
		var refused atomic.Bool
		st.stage = func(info *nix.PathInfo) error {
			if info.Path == cfg.info.Path && refused.CompareAndSwap(false, true) {
				return fmt.Errorf("%w: liar's index", nix.ErrHashMismatch)
			}
			return nil
		}
		var believed []peer.ID
		f := &transfer{pl: pl, start: time.Now(), net: net, store: st,
			opts: Options{Window: 4, Ingest: 2, StallTimeout: 15 * time.Second, SpoolDir: t.TempDir()},
			log:  slog.New(slog.DiscardHandler),
			locate: func(context.Context, []nix.PathHash) [][]peer.ID {
				return nil
			},
			believe: func(_ context.Context, p nix.Path, providers []peer.ID) (*item, error) {
				believed = providers
				fresh := *cfg
				fresh.infoFrom, fresh.providers = honest, []peer.ID{honest}
				return &fresh, nil
			},
		}
		f.init("/nix/store")
		f.sched.budget = 1 << 30
		began := time.Now()
		if err := f.prepareAll(t.Context(), pl.items); err != nil {
			t.Fatal(err)
		}
		if err := f.drive(t.Context()); err != nil {
			t.Fatalf("transfer failed: %v", err)
		}
		took := time.Since(began)
		t.Logf("took %v of fake time", took)

		if want := []string{"p1", "p2", "p3"}; !slices.Equal(st.committed, want) {
			t.Errorf("committed %v, want %v (references first)", st.committed, want)
		}
		if slices.Contains(believed, liar) || !slices.Contains(believed, honest) {
			t.Errorf("asked %v to describe cfg again; want the providers other than liar", believed)
		}
		rep := &Report{}
		f.report(rep)
		why := map[string]string{}
		var fetched int64
		for _, pr := range rep.Peers {
			why[pr.ID] = pr.Dropped
			fetched += pr.BytesFetched
		}
		for p, want := range map[peer.ID]string{
			bad:     "sent bad data: chunk ",
			stall:   "stalled",
			flaky:   "stream reset",
			liar:    "described " + cfg.info.Path.String() + " with a chunk index that does not produce its NAR",
			honest:  "",
			lacking: "",
		} {
			if got := why[p.String()]; len(got) < len(want) || got[:len(want)] != want || (want == "" && got != "") {
				t.Errorf("%s: dropped %q, want %q", p, got, want)
			}
		}
		if total := int64(len(nars[lib.info.Path.Hash]) + len(nars[app.info.Path.Hash]) + 2*len(nars[cfg.info.Path.Hash])); fetched < total {
			t.Errorf("fetched %d bytes, want at least %d (cfg twice)", fetched, total)
		}
		// The stall costs one stall timeout of fake time, not a real one.
		if took < 15*time.Second || took > 2*time.Minute {
			t.Errorf("took %v of fake time, want one stall timeout and a little", took)
		}
	})
}

// Preparing fresh paths allocates nothing per path that is as large as a
// chunk buffer: only a spool left by an earlier sync is read back.
func TestPrepareFreshAllocatesLittle(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var items []*item
	for i := range 30 {
		it, _, _ := nar(r, byte(i+1), 4, []peer.ID{"p"})
		items = append(items, it)
	}
	pl := testPlan(items...)
	f := &transfer{pl: pl, start: time.Now(), net: &fakePeers{}, store: &fakeStore{},
		opts: Options{Window: 4, Ingest: 2, StallTimeout: 15 * time.Second, SpoolDir: t.TempDir()},
		log:  slog.New(slog.DiscardHandler)}
	f.init("/nix/store")
	defer f.closeSpools()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := f.prepareAll(t.Context(), pl.items); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	perPath := (after.TotalAlloc - before.TotalAlloc) / uint64(len(items))
	t.Logf("%d bytes allocated per fresh path", perPath)
	if perPath >= chunk.MaxSize/2 {
		t.Errorf("preparing a fresh path allocated %d bytes; a chunk buffer is %d", perPath, chunk.MaxSize)
	}
}

// fakeSwarm records what a transfer tells its subscribers.
type fakeSwarm struct {
	mu     sync.Mutex
	gained []nix.PathHash // paths said whole again
}

func (fs *fakeSwarm) AddPartial(p2p.Partial) func() { return func() {} }
func (fs *fakeSwarm) Gained(h nix.PathHash) {
	fs.mu.Lock()
	fs.gained = append(fs.gained, h)
	fs.mu.Unlock()
}
func (fs *fakeSwarm) GainedChunk(nix.PathHash, int, []peer.ID) {}
func (fs *fakeSwarm) SubscribeHaves(context.Context, peer.ID, []nix.PathHash, func(*p2p.Haves) error) error {
	return nil
}
func (fs *fakeSwarm) ConnectedPeers() []peer.ID { return nil }

// A path fetched again under a new description tells its subscribers
// what it holds anew: what they were told went with the old spool, and
// a peer that believes this one holds a chunk is not told when it is
// gained again.
func TestRestartSaysHoldingsAgain(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	it, _, _ := nar(r, 1, 4, []peer.ID{"p"})
	fresh, _, _ := nar(r, 1, 4, []peer.ID{"q"})
	pl := testPlan(it)
	fs := &fakeSwarm{}
	f := &transfer{pl: pl, start: time.Now(), net: &fakePeers{}, store: &fakeStore{}, haves: fs,
		opts: Options{Window: 4, Ingest: 2, StallTimeout: 15 * time.Second, SpoolDir: t.TempDir()},
		log:  slog.New(slog.DiscardHandler)}
	f.init("/nix/store")
	defer f.closeSpools()
	if err := f.prepareAll(t.Context(), pl.items); err != nil {
		t.Fatal(err)
	}
	st := f.sched.items[it.info.Path.Hash]
	if err := f.restart(t.Context(), st, fresh); err != nil {
		t.Fatal(err)
	}
	if len(fs.gained) != 1 || fs.gained[0] != it.info.Path.Hash {
		t.Errorf("after a restart subscribers were told of %v, want the path said whole again", fs.gained)
	}
}

// roomSwarm is a room as a transfer's swarmPeers: every peer connected,
// each answering a subscription with what it holds (held: whole, or a
// bitfield per path; nothing, as a real peer, when it holds none), and
// staying subscribed until the transfer ends.
type roomSwarm struct {
	fakeSwarm
	peers []peer.ID
	held  map[peer.ID]func(paths []nix.PathHash) *p2p.Haves

	mu         sync.Mutex
	subscribed []peer.ID
	answered   int                        // subscriptions whose first answer was taken (or that had none)
	open       map[peer.ID]int            // subscriptions not ended
	paths      map[peer.ID][]nix.PathHash // asked about by the newest subscription
}

func (rs *roomSwarm) ConnectedPeers() []peer.ID { return slices.Clone(rs.peers) }

func (rs *roomSwarm) SubscribeHaves(ctx context.Context, p peer.ID, paths []nix.PathHash, got func(*p2p.Haves) error) error {
	rs.mu.Lock()
	rs.subscribed = append(rs.subscribed, p)
	if rs.open == nil {
		rs.open, rs.paths = map[peer.ID]int{}, map[peer.ID][]nix.PathHash{}
	}
	rs.open[p]++
	rs.paths[p] = paths
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		if rs.open[p]--; rs.open[p] == 0 {
			delete(rs.open, p)
		}
		rs.mu.Unlock()
	}()
	if msg := rs.held[p](paths); msg != nil {
		if err := got(msg); err != nil {
			return err
		}
	}
	rs.mu.Lock()
	rs.answered++
	rs.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// following are the peers ever subscribed to; active, those subscribed
// to now.
func (rs *roomSwarm) following() []peer.ID {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := slices.Clone(rs.subscribed)
	slices.Sort(out)
	return out
}

func (rs *roomSwarm) active() []peer.ID {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := slices.Collect(maps.Keys(rs.open))
	slices.Sort(out)
	return out
}

// roomTransfer is a transfer of one path of four chunks, held whole by
// "seed", among rs's peers; it starts no workers (only whom it follows is
// looked at) and ends with the test.
func roomTransfer(t *testing.T, rs *roomSwarm) (f *transfer, follow func()) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	it, _, _ := nar(r, 1, 4, []peer.ID{"seed"})
	pl := testPlan(it)
	rs.held["seed"] = func([]nix.PathHash) *p2p.Haves { return &p2p.Haves{Entries: []p2p.HaveEntry{{Path: 0, All: true}}} }
	f = &transfer{pl: pl, start: time.Now(), net: &fakePeers{}, store: &fakeStore{}, haves: rs,
		opts: Options{Window: 4, Ingest: 2, StallTimeout: 15 * time.Second, SpoolDir: t.TempDir()},
		log:  slog.New(slog.DiscardHandler)}
	f.init("/nix/store")
	t.Cleanup(f.closeSpools)
	if err := f.prepareAll(t.Context(), pl.items); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var workers sync.WaitGroup
	t.Cleanup(workers.Wait)
	t.Cleanup(cancel)
	t.Cleanup(func() { f.fail(errors.New("test over")) }) // ends timers (undeferAfter)
	f.spawn = func(peer.ID) {}
	fw := &following{subs: map[peer.ID]*sub{}}
	return f, func() { f.follow(ctx, &workers, fw) }
}

// followersOfChunk0 is a room of "seed" (roomTransfer's seeder) and
// followers that each hold the first chunk of its path.
func followersOfChunk0(followers ...peer.ID) *roomSwarm {
	rs := &roomSwarm{peers: append(slices.Clone(followers), "seed"), held: map[peer.ID]func([]nix.PathHash) *p2p.Haves{}}
	for _, p := range followers {
		rs.held[p] = func([]nix.PathHash) *p2p.Haves {
			return &p2p.Haves{Entries: []p2p.HaveEntry{{Path: 0, Bits: []byte{1}}}}
		}
	}
	return rs
}

// A fetch follows the peers that hold its paths whole and swarmFollow
// others at random, not every peer of a room. When a chunk turns out to
// have nobody followed left to serve it (here the seeder is dropped), it
// follows every peer before it gives up, and gives up only if none of
// them holds it.
func TestFollow(t *testing.T) {
	defer func(n int) { swarmFollow = n }(swarmFollow)
	swarmFollow = 1
	for _, tc := range []struct {
		name    string
		holders [][]int // the chunks each of the followers a, b, c holds
		fails   bool
	}{
		{"the others hold what is missing", [][]int{{0, 1}, {2}, {3}}, false},
		// c holds nothing, and so says nothing.
		{"nobody holds chunk 3", [][]int{{0, 1}, {2}, nil}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &roomSwarm{peers: []peer.ID{"a", "b", "c", "seed"}, held: map[peer.ID]func([]nix.PathHash) *p2p.Haves{}}
			for i, p := range []peer.ID{"a", "b", "c"} {
				bits := []byte{0}
				for _, c := range tc.holders[i] {
					bits[0] |= 1 << c
				}
				rs.held[p] = func([]nix.PathHash) *p2p.Haves {
					if bits[0] == 0 {
						return nil
					}
					return &p2p.Haves{Entries: []p2p.HaveEntry{{Path: 0, Bits: bits}}}
				}
			}
			f, tick := roomTransfer(t, rs)
			// follow until the subscriptions it started have been answered
			follow := func(want int) {
				t.Helper()
				tick()
				waitUntil(t, 5*time.Second, "subscriptions unanswered", func() bool {
					rs.mu.Lock()
					defer rs.mu.Unlock()
					return rs.answered == want
				})
			}

			follow(2)
			got := rs.following()
			if len(got) != 2 || got[1] != "seed" {
				t.Fatalf("followed %v, want the seeder and one other", got)
			}
			s := f.lock()
			capped := s.capped
			s.dropPeer("seed", "gone for the test")
			err, all := s.err, s.followAll
			f.unlock()
			if !capped || err != nil || !all {
				t.Fatalf("capped %v; with the seeder dropped: err %v, follow all %v; want capped, no error yet, follow all", capped, err, all)
			}

			follow(4)
			if got := rs.following(); !slices.Equal(got, []peer.ID{"a", "b", "c", "seed"}) {
				t.Fatalf("followed %v after a chunk went missing, want every peer", got)
			}
			tick() // a tick with nobody new to follow: judged again
			s = f.lock()
			capped, err = s.capped, s.err
			f.unlockQuiet()
			if capped {
				t.Error("still capped with every peer followed")
			}
			if tc.fails != (err != nil) {
				t.Fatalf("after following every peer: err %v, want failure %v", err, tc.fails)
			}
			if err != nil && !strings.Contains(err.Error(), "no peer left to fetch") {
				t.Errorf("error %q does not say that no peer is left", err)
			}
		})
	}
}

// A Later answer names the peer the chunk went to, and the fetch follows
// it at once beyond swarmFollow (swarmPointed of them); a newer one takes
// the place of the one pointed to longest ago once that one has been
// followed pointedFor, and until then waits its turn. One not connected
// here has a connected peer followed in its place.
func TestFollowPointed(t *testing.T) {
	defer func(n, m int, d time.Duration) { swarmFollow, swarmPointed, pointedFor = n, m, d }(swarmFollow, swarmPointed, pointedFor)
	swarmFollow, swarmPointed = 1, 1
	rs := followersOfChunk0("a", "b", "c")
	f, tick := roomTransfer(t, rs)
	active := rs.active
	tick()
	waitUntil(t, 5*time.Second, "first subscriptions", func() bool { return len(active()) == 2 })
	var others []peer.ID // the two peers not followed
	for _, p := range []peer.ID{"a", "b", "c"} {
		if !slices.Contains(active(), p) {
			others = append(others, p)
		}
	}
	// The seeder answers Later for the first chunk, naming to; relocate
	// is woken to follow it (here: the tick it would run).
	var to peer.ID
	f.net = &fakePeers{serve: map[peer.ID]func(context.Context, []p2p.ChunkWant, func(int, []byte, error) error) error{
		"seed": func(_ context.Context, _ []p2p.ChunkWant, got func(int, []byte, error) error) error {
			return got(0, nil, &p2p.LaterError{After: time.Hour, To: to})
		},
	}}
	point := func(p peer.ID) {
		t.Helper()
		to = p
		s := f.lock()
		w := firstQueued(s)
		f.unlockQuiet()
		if _, _, _, err := f.fetchBatch(t.Context(), "seed", []*want{w}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-f.pointed:
		default:
			t.Fatalf("a Later naming %s, not followed, did not wake relocate", string(p))
		}
		tick()
	}

	point(others[0])
	waitUntil(t, 5*time.Second, "the peer pointed to followed", func() bool {
		return len(active()) == 3 && slices.Contains(active(), others[0])
	})
	pointedFor = time.Hour
	point(others[1])
	if got := active(); len(got) != 3 || slices.Contains(got, others[1]) {
		t.Fatalf("following %v: a peer pointed to made way before it was followed pointedFor", got)
	}
	pointedFor = 0
	tick() // the next tick: the peer pointed to is remembered
	waitUntil(t, 5*time.Second, "the newest pointed to followed in place of the older", func() bool {
		got := active()
		return len(got) == 3 && slices.Contains(got, others[1]) && !slices.Contains(got, others[0])
	})
	// A peer pointed to that is not connected here: another is followed
	// in its place (others[0], the one connected peer not followed).
	point("far")
	waitUntil(t, 5*time.Second, "a stand-in followed for a peer not connected", func() bool {
		got := active()
		return len(got) == 3 && slices.Contains(got, others[0]) && !slices.Contains(got, others[1])
	})
}

// A peer followed that comes to hold a path of the plan whole counts as
// a seeder, and its place under swarmFollow goes to another.
func TestFollowSeederMakesRoom(t *testing.T) {
	defer func(n int) { swarmFollow = n }(swarmFollow)
	swarmFollow = 1
	rs := followersOfChunk0("a", "b")
	f, tick := roomTransfer(t, rs)
	tick()
	waitUntil(t, 5*time.Second, "first subscriptions", func() bool { return len(rs.active()) == 2 })
	tick()
	if got := rs.active(); len(got) != 2 {
		t.Fatalf("following %v, want the seeder and one other", got)
	}
	first := slices.DeleteFunc(rs.active(), func(p peer.ID) bool { return p == "seed" })[0]
	s := f.lock()
	s.addProviders(f.pl.items[0], []peer.ID{first}) // it committed the path
	f.unlockQuiet()
	tick()
	waitUntil(t, 5*time.Second, "the other follower followed", func() bool { return len(rs.active()) == 3 })
}

// A transfer follows at most watchMax paths at once: the first still
// missing chunks in the fetch order (which starts anywhere in the plan),
// and the next ones once at most half of those miss any, asked about
// anew of every peer it follows. Before, it followed the plan's first
// watchMax paths for the whole transfer, and fetched the rest whole.
// eightPaths is a transfer of eight paths of two chunks each, whose
// fetch order starts at the plan's sixth (p6), among "seed", which holds
// them whole, and "a", which holds the first chunk of each; it returns
// the chunks' bytes too.
func eightPaths(t *testing.T) (*transfer, *roomSwarm, []*item, map[chunk.ID][]byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(9, 10))
	var items []*item
	data := map[chunk.ID][]byte{}
	for i := range 8 {
		it, _, chunks := nar(r, byte(i+1), 2, []peer.ID{"seed"})
		items = append(items, it)
		maps.Copy(data, chunks)
	}
	pl := testPlan(items...)
	rs := &roomSwarm{peers: []peer.ID{"a", "seed"}, held: map[peer.ID]func([]nix.PathHash) *p2p.Haves{
		"seed": func(paths []nix.PathHash) *p2p.Haves {
			msg := &p2p.Haves{}
			for i := range paths {
				msg.Entries = append(msg.Entries, p2p.HaveEntry{Path: uint32(i), All: true})
			}
			return msg
		},
		"a": func(paths []nix.PathHash) *p2p.Haves {
			msg := &p2p.Haves{}
			for i := range paths {
				msg.Entries = append(msg.Entries, p2p.HaveEntry{Path: uint32(i), Bits: []byte{1}})
			}
			return msg
		},
	}}
	f := &transfer{pl: pl, start: time.Now(), net: &fakePeers{}, store: &fakeStore{}, haves: rs,
		opts: Options{Window: 4, Ingest: 2, StallTimeout: 15 * time.Second, SpoolDir: t.TempDir()},
		log:  slog.New(slog.DiscardHandler)}
	f.init("/nix/store")
	t.Cleanup(f.closeSpools)
	if err := f.prepareAll(t.Context(), fetchOrder(items, false, func(int) int { return 5 })); err != nil {
		t.Fatal(err)
	}
	return f, rs, items, data
}

func TestFollowMovesOn(t *testing.T) {
	defer func(n int) { watchMax = n }(watchMax)
	watchMax = 4
	f, rs, items, data := eightPaths(t)
	names := func(paths []nix.PathHash) []string {
		var out []string
		for _, h := range paths {
			out = append(out, f.pl.byHash[h].info.Path.Name)
		}
		return out
	}
	ctx, cancel := context.WithCancel(t.Context())
	var workers sync.WaitGroup
	t.Cleanup(workers.Wait)
	t.Cleanup(cancel)
	t.Cleanup(func() { f.fail(errors.New("test over")) })
	f.spawn = func(peer.ID) {}
	fw := &following{subs: map[peer.ID]*sub{}}
	// tick follows, and waits until every peer's newest subscription
	// asks about want and was answered.
	subs := 0
	tick := func(want ...string) {
		t.Helper()
		f.follow(ctx, &workers, fw)
		state := func() (string, bool) {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			return fmt.Sprintf("%d subscriptions, %d answered, open %v; want %d", len(rs.subscribed), rs.answered, rs.open, subs+2),
				len(rs.subscribed) == subs+2 && rs.answered == subs+2 && rs.open["a"] == 1 && rs.open["seed"] == 1
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			got, ok := state()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("following %v: %s", want, got)
			}
		}
		subs += 2
		for _, p := range []peer.ID{"a", "seed"} {
			rs.mu.Lock()
			got := names(rs.paths[p])
			rs.mu.Unlock()
			if !slices.Equal(got, want) {
				t.Fatalf("%s asked about %v, want %v", p, got, want)
			}
		}
	}
	// done delivers the chunks of the plan's i-th path, as from the seeder.
	done := func(i int) {
		t.Helper()
		s := f.lock()
		ws := slices.Clone(s.items[items[i].info.Path.Hash].at)
		f.unlockQuiet()
		for _, w := range ws {
			if err := f.deliver("seed", w, data[w.ref.ID]); err != nil {
				t.Fatal(err)
			}
		}
	}
	holds := func(p peer.ID, i int) bool {
		defer f.unlockQuiet()
		s := f.lock()
		return s.peers.get(p).holds(items[i].info.Path.Hash, 0)
	}

	tick("p6", "p7", "p8", "p1")
	if !holds("a", 5) || !holds("a", 0) || holds("a", 1) {
		t.Fatal("a's first chunks not heard of p6 and p1, or heard of p2")
	}
	done(5)
	f.follow(ctx, &workers, fw) // three of four still missing chunks: no move
	rs.mu.Lock()
	n := len(rs.subscribed)
	rs.mu.Unlock()
	if n != subs {
		t.Fatalf("%d subscriptions after a tick with most paths followed still missing chunks, want %d", n, subs)
	}
	done(6)
	tick("p8", "p1", "p2", "p3") // half of those followed are done: on to the next
	done(7)
	done(0)
	tick("p2", "p3", "p4", "p5")
	if !holds("a", 4) {
		t.Fatal("a's first chunk of p5 not heard")
	}
}

// Paths beyond those followed are asked of nobody: with the haves
// protocol, relocate asks no peer which of them it holds (before, every
// connected peer was asked about each twice a second), and without it,
// every unfinished path is asked about.
func TestRelocateAsksOnlyWithoutHaves(t *testing.T) {
	defer func(n int, d time.Duration) { watchMax, relocateEvery = n, d }(watchMax, relocateEvery)
	watchMax, relocateEvery = 4, time.Millisecond
	for _, haves := range []bool{true, false} {
		t.Run(fmt.Sprint("haves ", haves), func(t *testing.T) {
			f, rs, _, _ := eightPaths(t)
			if !haves {
				f.haves = nil
			}
			var mu sync.Mutex
			var asked []int
			f.locate = func(_ context.Context, hashes []nix.PathHash) [][]peer.ID {
				mu.Lock()
				asked = append(asked, len(hashes))
				mu.Unlock()
				return make([][]peer.ID, len(hashes))
			}
			ctx, cancel := context.WithCancel(t.Context())
			var workers sync.WaitGroup
			f.spawn = func(peer.ID) {}
			workers.Add(1)
			go func() {
				defer workers.Done()
				f.relocate(ctx, &workers)
			}()
			if haves {
				waitUntil(t, 5*time.Second, "subscriptions", func() bool { return len(rs.active()) == 2 })
			}
			time.Sleep(50 * time.Millisecond) // some 50 of relocate's ticks
			cancel()
			workers.Wait()
			mu.Lock()
			defer mu.Unlock()
			if haves && len(asked) > 0 {
				t.Errorf("asked peers about %v paths, want none: the paths not followed wait their turn", asked)
			}
			if !haves && (len(asked) == 0 || asked[0] != 8) {
				t.Errorf("asked peers about %v paths, want all 8 unfinished", asked)
			}
		})
	}
}
