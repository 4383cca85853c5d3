package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// peerNode is a store with a real libp2p node on loopback.
type peerNode struct {
	store *store.Store
	node  *p2p.Node
	trust *p2p.TrustGroup
	home  string
}

func newPeer(t testing.TB, content p2p.Content) *peerNode {
	t.Helper()
	home := t.TempDir()
	s, err := store.Open(home, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if content == nil {
		content = s
	}
	key, _, _ := crypto.GenerateEd25519Key(nil)
	trust := p2p.NewTrustGroup(nil)
	n, err := p2p.New(context.Background(), p2p.Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: trust, Content: content})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &peerNode{store: s, node: n, trust: trust, home: home}
}

// connect pairs a with each of others and connects them.
func connect(t testing.TB, a *peerNode, others ...*peerNode) {
	t.Helper()
	for _, b := range others {
		a.trust.Allow(b.node.ID(), "")
		b.trust.Allow(a.node.ID(), "")
		if err := a.node.Connect(context.Background(), b.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
}

// closure builds a chain of n input-addressed paths in s, each referring
// to the previous, with files of the given size, signed by key. It returns
// them references first.
func closure(t testing.TB, s *store.Store, key manifest.SecretKey, n, size int, seed uint64) []*nix.PathInfo {
	t.Helper()
	var out []*nix.PathInfo
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range n {
		dir := t.TempDir()
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		os.MkdirAll(filepath.Join(dir, "p", "lib"), 0o755)
		os.WriteFile(filepath.Join(dir, "p", "lib", "data"), data, 0o644)
		var refs []nix.Path
		if i > 0 {
			prev := out[i-1].Path
			refs = append(refs, prev)
			os.WriteFile(filepath.Join(dir, "p", "ref"), []byte(prev.Abs(s.StoreDir())), 0o644)
		}
		var nar bytes.Buffer
		nix.DumpNAR(&nar, filepath.Join(dir, "p"))
		p, _ := nix.MakePath(s.StoreDir(), "output:out", nix.Hash(sha256.Sum256([]byte(fmt.Sprint(seed, i)))), fmt.Sprintf("pkg%d", i))
		info := &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len()), References: refs}
		info.Sigs = []string{key.Sign(info.Fingerprint(s.StoreDir()))}
		pi, err := s.AddNAR(context.Background(), info, &nar)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pi)
	}
	return out
}

func testKeys(t testing.TB) (manifest.SecretKey, *manifest.Keyring) {
	sk, err := manifest.GenerateKey("test-1")
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := manifest.LoadKeyring(filepath.Join(t.TempDir(), "keys"))
	kr.Add(sk.Public())
	return sk, kr
}

func narOf(t testing.TB, s *store.Store, p nix.Path) []byte {
	var b bytes.Buffer
	if err := s.WriteNAR(context.Background(), &b, p, 0, -1); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// seeding starts a node that serves a closure of n paths of size bytes
// (made from seed) through wrap, which decorates its store.
func seeding(t testing.TB, sk manifest.SecretKey, n, size int, seed uint64, wrap func(*store.Store) p2p.Content) (*peerNode, []*nix.PathInfo) {
	t.Helper()
	var paths []*nix.PathInfo
	pn := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content {
		paths = closure(t, s, sk, n, size, seed)
		return wrap(s)
	}})
	return pn, paths
}

// fetched is what a fetch running in the background returned.
type fetched struct {
	rep *Report
	err error
}

// fetchInBackground starts c fetching roots with opts; its result arrives
// on the channel.
func fetchInBackground(ctx context.Context, c *peerNode, opts Options, roots ...nix.Path) <-chan fetched {
	done := make(chan fetched, 1)
	go func() {
		rep, err := New(c.store, c.node, opts).Fetch(ctx, roots)
		done <- fetched{rep, err}
	}()
	return done
}

// waitUntil polls cond until it holds, and fails the test if it does not
// within d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

func requireSameClosure(t testing.TB, from, to *store.Store, paths []*nix.PathInfo) {
	t.Helper()
	for _, pi := range paths {
		got, err := to.Lookup(pi.Path)
		if err != nil {
			t.Fatalf("%s not valid after sync: %v", pi.Path, err)
		}
		if got.NarHash != pi.NarHash || !bytes.Equal(narOf(t, to, pi.Path), narOf(t, from, pi.Path)) {
			t.Fatalf("%s differs after sync", pi.Path)
		}
	}
	var problems []store.Problem
	to.Verify(context.Background(), nil, func(p store.Problem) { problems = append(problems, p) })
	if len(problems) > 0 {
		t.Fatalf("store has problems after sync: %v", problems)
	}
}

// waitFor serves a store's chunks only once open is closed, or after
// giveUp: a seeder that cannot finish a transfer alone before another
// seeder has served, however the machine schedules their streams.
type waitFor struct {
	*store.Store
	open   <-chan struct{}
	giveUp time.Duration
}

func (w waitFor) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	select {
	case <-w.open:
	case <-time.After(w.giveUp):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return w.Store.ReadChunk(ctx, id, size)
}

// signalServed says on served when it has served its first chunk.
type signalServed struct {
	*store.Store
	once   sync.Once
	served chan struct{}
}

func (s *signalServed) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	b, err := s.Store.ReadChunk(ctx, id, size)
	if err == nil {
		s.once.Do(func() { close(s.served) })
	}
	return b, err
}

func TestSyncFromTwoSeeders(t *testing.T) {
	sk, kr := testKeys(t)
	// The sync must share the closure between both seeders: a, loaded or
	// not, serves nothing until b has served a chunk, which b does only if
	// the sync asks it for some while a is busy. On an idle loopback a
	// alone could finish before b's first stream opens.
	served := make(chan struct{})
	a := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content { return waitFor{s, served, 10 * time.Second} }})
	b := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content { return &signalServed{Store: s, served: served} }})
	c := newPeer(t, nil)
	paths := closure(t, a.store, sk, 6, 700<<10, 1)
	closure(t, b.store, sk, 6, 700<<10, 1) // b holds the same closure
	connect(t, c, a, b)
	root := paths[len(paths)-1].Path
	var last Progress
	rep, err := New(c.store, c.node, Options{Keys: kr, Progress: func(p Progress) { last = p }}).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatal(err)
	}
	requireSameClosure(t, a.store, c.store, paths)
	if rep.PathsFetched != 6 || rep.BytesFetched != rep.NarBytes || !last.Done || last.PathsDone != 6 {
		t.Fatalf("report %+v, last progress %+v", rep, last)
	}
	used := 0
	for _, p := range rep.Peers {
		if p.BytesFetched > 0 {
			used++
		}
	}
	if used != 2 {
		t.Fatalf("fetched from %d peers, want both: %+v", used, rep.Peers)
	}
	// Nothing to do the second time.
	rep, err = New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root})
	if err != nil || rep.PathsFetched != 0 || rep.BytesFetched != 0 {
		t.Fatalf("second sync: %+v %v", rep, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.home, "partial")); len(ents) != 0 {
		t.Fatalf("spool files left: %v", ents)
	}
}

func TestSyncRefusesUnsignedPaths(t *testing.T) {
	sk, _ := testKeys(t)
	_, otherKeys := testKeys(t)
	a, c := newPeer(t, nil), newPeer(t, nil)
	paths := closure(t, a.store, sk, 2, 10<<10, 2)
	connect(t, c, a)
	root := paths[1].Path
	_, err := New(c.store, c.node, Options{Keys: otherKeys}).Fetch(context.Background(), []nix.Path{root})
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "test-1") {
		t.Fatalf("sync of paths signed by an untrusted key: %v", err)
	}
	if ok, _ := c.store.IsValid(root); ok {
		t.Fatal("an untrusted path became valid")
	}
	// --no-check-sigs takes them.
	if _, err := New(c.store, c.node, Options{NoCheckSigs: true}).Fetch(context.Background(), []nix.Path{root}); err != nil {
		t.Fatal(err)
	}
}

func TestSyncReusesLocalChunks(t *testing.T) {
	sk, kr := testKeys(t)
	a, c := newPeer(t, nil), newPeer(t, nil)
	// Generation 1 and 2 share a big file; only a small one differs.
	big := make([]byte, 2<<20)
	r := rand.New(rand.NewPCG(5, 5))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	mk := func(s *store.Store, gen int) *nix.PathInfo {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "cfg"), 0o755)
		os.WriteFile(filepath.Join(dir, "cfg", "big"), big, 0o644)
		os.WriteFile(filepath.Join(dir, "cfg", "version"), []byte(fmt.Sprint("generation ", gen)), 0o644)
		pi, err := s.AddTree(context.Background(), filepath.Join(dir, "cfg"), "cfg")
		if err != nil {
			t.Fatal(err)
		}
		return pi
	}
	mk(a.store, 1)
	g1c := mk(c.store, 1)
	g2 := mk(a.store, 2)
	_ = g1c
	connect(t, c, a)
	rep, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{g2.Path})
	if err != nil {
		t.Fatal(err)
	}
	_ = sk
	if rep.BytesFetched*10 > rep.NarBytes || rep.BytesReused == 0 {
		t.Fatalf("fetched %d of %d bytes (reused %d): local chunks not reused", rep.BytesFetched, rep.NarBytes, rep.BytesReused)
	}
	requireSameClosure(t, a.store, c.store, []*nix.PathInfo{g2})
}

var _ = time.Second

// TestWidenOnlyFastPeers: a peer gets its second stream only after a big
// enough batch came faster than fastStream, and never a third.
func TestWidenOnlyFastPeers(t *testing.T) {
	const p = peer.ID("peer")
	batch := func(chunks int) []*want {
		var b []*want
		for range chunks {
			b = append(b, &want{ref: chunk.Ref{Size: 64 << 10}})
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		chunks  int // of 64 KiB
		took    time.Duration
		streams int
		dropped string
		want    bool
	}{
		{"loopback", 64, 10 * time.Millisecond, 1, "", true},             // 4 MiB at ~420 MB/s
		{"100 Mbit/s link", 64, 340 * time.Millisecond, 1, "", false},    // ~12 MB/s
		{"small endgame batch", 4, 100 * time.Microsecond, 1, "", false}, // fast but 256 KiB
		{"already two", 64, 10 * time.Millisecond, 2, "", false},
		{"dropped", 64, 10 * time.Millisecond, 1, "sent bad data", false},
	} {
		s := newScheduler(&plan{}, "/nix/store", 16)
		ps := s.peers.get(p)
		ps.streams, ps.dropped = tc.streams, tc.dropped
		var bytes int64
		for _, w := range batch(tc.chunks) {
			bytes += int64(w.ref.Size)
		}
		got := s.widen(p, bytes, tc.took)
		if got != tc.want || ps.streams != tc.streams+map[bool]int{true: 1}[got] {
			t.Errorf("%s: widen = %v (streams %d), want a second stream: %v", tc.name, got, ps.streams, tc.want)
		}
	}
}

// Two followers sync a closure of more paths than a transfer follows at
// once from one seeder at the same time, through real nodes: the paths
// each follows move on as it fetches (rewatch), each move a new haves
// subscription to every peer it follows, and both end with the whole
// closure, byte for byte.
func TestSyncFollowsAClosureBiggerThanAWatch(t *testing.T) {
	defer func(n int) { watchMax = n }(watchMax)
	watchMax = 3
	sk, kr := testKeys(t)
	seed, paths := seeding(t, sk, 12, 256<<10, 3, func(s *store.Store) p2p.Content { return s })
	a, b := newPeer(t, nil), newPeer(t, nil)
	connect(t, seed, a, b)
	connect(t, a, b)
	root := paths[len(paths)-1].Path
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	da := fetchInBackground(ctx, a, Options{Keys: kr}, root)
	db := fetchInBackground(ctx, b, Options{Keys: kr}, root)
	for name, d := range map[string]<-chan fetched{"a": da, "b": db} {
		got := <-d
		if got.err != nil {
			t.Fatalf("%s: %v", name, got.err)
		}
		for _, p := range got.rep.Peers {
			t.Logf("%s fetched %d bytes from %s", name, p.BytesFetched, p.ID)
		}
	}
	requireSameClosure(t, seed.store, a.store, paths)
	requireSameClosure(t, seed.store, b.store, paths)
}

// countClosures counts the closure requests a store serves.
type countClosures struct {
	*store.Store
	n atomic.Int64
}

func (c *countClosures) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	c.n.Add(1)
	return c.Store.Closure(roots...)
}

// A sync plans a closure of more paths than one info answer holds
// (p2p.MaxClosureInfos) in a few requests, none for a path alone. The
// seeder answers a closure request referrers first, so an answer cut
// short holds the root and what is near it, and the request for the rest
// brings only paths not seen yet; the sync asks for the closures of what
// it still lacks MaxInfoHashes at a time, not path by path. Cut
// references first (before 2026-12-05), every answer held the same bottom
// 4,096 paths: the chain took 300 closure requests, each of 4,096 infos.
func TestSyncPlansABigClosureInFewRequests(t *testing.T) {
	n := p2p.MaxClosureInfos + 300
	for _, tc := range []struct {
		name     string
		refs     func(i int) []int
		closures int64 // closure requests at most
	}{
		// Each path refers to the one before it.
		{"a chain", func(i int) []int {
			if i == 0 {
				return nil
			}
			return []int{i - 1}
		}, 2},
		// Two paths refer to half the leaves each, and the root to them:
		// the first answer leaves about 300 leaves out, 5 requests' worth.
		{"wide", func(i int) []int {
			switch {
			case i == n-1:
				return []int{n - 3, n - 2}
			case i == n-2:
				return seq(0, (n-3)/2)
			case i == n-3:
				return seq((n-3)/2, n-3)
			}
			return nil
		}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sk, kr := testKeys(t)
			var cc *countClosures
			var paths []*nix.PathInfo
			seed := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content {
				paths = fileGraph(t, s, sk, n, tc.refs)
				cc = &countClosures{Store: s}
				return cc
			}})
			c := newPeer(t, nil)
			connect(t, c, seed)
			var alone countHandler
			root := paths[len(paths)-1].Path
			rep, err := New(c.store, c.node, Options{Keys: kr, Logger: slog.New(&alone)}).Fetch(context.Background(), []nix.Path{root})
			if err != nil {
				t.Fatal(err)
			}
			if rep.PathsFetched != n {
				t.Fatalf("fetched %d paths of %d", rep.PathsFetched, n)
			}
			if got := cc.n.Load(); got > tc.closures || alone.n.Load() > 0 {
				t.Errorf("the seeder served %d closure requests (want at most %d), and %d paths were described alone (want none)", got, tc.closures, alone.n.Load())
			}
		})
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// countHandler counts the fetcher's "describing a path alone" lines.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "describing a path alone") {
		h.n.Add(1)
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// fileGraph adds n paths to s, path i referring to refs(i) (each before
// it), each one file naming its references, signed by key; references
// first. It is closure without a tree on disk per path: a NAR of one
// regular file.
func fileGraph(t testing.TB, s *store.Store, key manifest.SecretKey, n int, refs func(i int) []int) []*nix.PathInfo {
	t.Helper()
	str := func(b []byte, v string) []byte {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
		b = append(b, v...)
		return append(b, make([]byte, (8-len(v)%8)%8)...)
	}
	var out []*nix.PathInfo
	for i := range n {
		contents := fmt.Sprint("file ", i, "\n")
		var paths []nix.Path
		for _, r := range refs(i) {
			paths = append(paths, out[r].Path)
			contents += out[r].Path.Abs(s.StoreDir()) + "\n"
		}
		slices.SortFunc(paths, func(a, b nix.Path) int { return strings.Compare(a.String(), b.String()) })
		var nar []byte
		for _, v := range []string{"nix-archive-1", "(", "type", "regular", "contents", contents, ")"} {
			nar = str(nar, v)
		}
		p, err := nix.MakePath(s.StoreDir(), "output:out", nix.Hash(sha256.Sum256([]byte(fmt.Sprint("chain", i)))), fmt.Sprintf("file%d", i))
		if err != nil {
			t.Fatal(err)
		}
		info := &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar)), NarSize: uint64(len(nar)), References: paths}
		info.Sigs = []string{key.Sign(info.Fingerprint(s.StoreDir()))}
		pi, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pi)
	}
	return out
}
