package fetch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// The tests in this file sync from peers that misbehave in one way each,
// alone and next to an honest peer, with real libp2p nodes and stores. In
// every case nothing corrupt may become valid; with an honest peer present
// the sync must complete, and without one it must fail with a clear error.

// lyingContent serves a store, except where one of its functions is set.
type lyingContent struct {
	*store.Store
	info  func(h nix.PathHash) (*nix.PathInfo, error)
	index func(h nix.PathHash) (chunk.Index, error)
	chunk func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error)
}

func (c *lyingContent) PathInfo(h nix.PathHash) (*nix.PathInfo, error) {
	if c.info != nil {
		return c.info(h)
	}
	return c.Store.PathInfo(h)
}

func (c *lyingContent) ChunkIndexOf(h nix.PathHash) (chunk.Index, error) {
	if c.index != nil {
		return c.index(h)
	}
	return c.Store.ChunkIndexOf(h)
}

func (c *lyingContent) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	if c.chunk != nil {
		return c.chunk(ctx, id, size)
	}
	return c.Store.ReadChunk(ctx, id, size)
}

// Closure walks references through PathInfo, so that a peer answering
// closure queries tells the same lies as one answering path by path.
func (c *lyingContent) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	var out []*nix.PathInfo
	seen := map[nix.PathHash]bool{}
	var visit func(p nix.Path) error
	visit = func(p nix.Path) error {
		if seen[p.Hash] {
			return nil
		}
		seen[p.Hash] = true
		pi, err := c.PathInfo(p.Hash)
		if err != nil {
			return err
		}
		for _, r := range pi.References {
			if r != pi.Path {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		out = append(out, pi)
		return nil
	}
	for _, r := range roots {
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// nodeOpts configure newNode.
type nodeOpts struct {
	key    crypto.PrivKey                   // random when nil
	wrap   func(s *store.Store) p2p.Content // nil serves the store
	public bool                             // serve any peer
	home   string                           // a fresh temporary home when empty
	store  *store.Store                     // serve this open store instead
	hook   func(t testing.TB, n *peerNode)  // after the node started
}

// newNode is newPeer with a chosen key, home, and content decorator.
func newNode(t testing.TB, o nodeOpts) *peerNode {
	t.Helper()
	s := o.store
	if s == nil {
		home := o.home
		if home == "" {
			home = t.TempDir()
		}
		var err error
		if s, err = store.Open(home, store.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	var content p2p.Content = s
	if o.wrap != nil {
		content = o.wrap(s)
	}
	key := o.key
	if key == nil {
		key, _, _ = crypto.GenerateEd25519Key(nil)
	}
	trust := p2p.NewTrustGroup(nil)
	n, err := p2p.New(context.Background(), p2p.Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: trust, Content: content, ServePublic: o.public})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	pn := &peerNode{store: s, node: n, trust: trust, home: s.Home()}
	if o.hook != nil {
		o.hook(t, pn)
	}
	return pn
}

// orderedKeys returns n node keys sorted by peer ID. The syncer asks a
// path's providers for its info in peer ID order, so the liars get the
// first keys: their descriptions are the ones believed, if any is.
func orderedKeys(t testing.TB, n int) []crypto.PrivKey {
	keys := make([]crypto.PrivKey, n)
	ids := make([]peer.ID, n)
	for i := range keys {
		keys[i], _, _ = crypto.GenerateEd25519Key(nil)
		ids[i], _ = peer.IDFromPrivateKey(keys[i])
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(string(ids[a]), string(ids[b])) })
	out := make([]crypto.PrivKey, n)
	for i, j := range idx {
		out[i] = keys[j]
	}
	return out
}

// checkNothingCorrupt asserts that s is consistent and that every path of
// paths valid in s is the signed one; it returns how many are valid.
func checkNothingCorrupt(t testing.TB, s *store.Store, paths []*nix.PathInfo) int {
	t.Helper()
	var problems []store.Problem
	if _, err := s.Verify(context.Background(), nil, func(p store.Problem) { problems = append(problems, p) }); err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("store has problems: %v", problems)
	}
	valid := 0
	for _, pi := range paths {
		got, err := s.Lookup(pi.Path)
		if err != nil {
			continue
		}
		valid++
		if got.NarHash != pi.NarHash || got.NarSize != pi.NarSize || !slices.Equal(got.References, pi.References) {
			t.Fatalf("%s became valid as %s (%d bytes, refs %v), want %s (%d bytes, refs %v)",
				pi.Path, got.NarHash, got.NarSize, got.References, pi.NarHash, pi.NarSize, pi.References)
		}
	}
	return valid
}

func requireNoSpool(t testing.TB, home string) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(home, "partial")); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("spool files left after a complete sync: %v", names)
	}
}

func peerReport(rep *Report, id peer.ID) PeerReport {
	for _, p := range rep.Peers {
		if p.ID == id.String() {
			return p
		}
	}
	return PeerReport{ID: id.String()}
}

// otherChunk returns the bytes of some chunk of s other than id, cut or
// zero-padded to size: right length, wrong content.
func otherChunk(ctx context.Context, s *store.Store, id chunk.ID, size uint32) ([]byte, error) {
	var data []byte
	err := s.Paths(ctx, func(pi *nix.PathInfo) error {
		ix, err := s.ChunkIndexOf(pi.Path.Hash)
		if err != nil {
			return err
		}
		for _, c := range ix {
			if c.ID != id {
				data, err = s.ReadChunk(ctx, c.ID, c.Size)
				if err != nil {
					return err
				}
				return io.EOF
			}
		}
		return nil
	})
	if data == nil {
		return nil, errors.Join(err, errors.New("no other chunk"))
	}
	out := make([]byte, size)
	copy(out, data)
	return out, nil
}

// forger describes every path with the chunk index of other bytes of the
// same size (cut with the real chunker), and serves those bytes by their
// IDs: each chunk is right for its ID, the index is consistent with the
// signed narSize, only the NAR it makes is not the signed one.
func forger(s *store.Store, seed uint64) p2p.Content {
	forged := map[nix.PathHash]chunk.Index{}
	chunks := map[chunk.ID][]byte{}
	r := rand.New(rand.NewPCG(seed, 99))
	s.Paths(context.Background(), func(pi *nix.PathInfo) error {
		nar := make([]byte, pi.NarSize)
		for i := range nar {
			nar[i] = byte(r.Uint32())
		}
		ix, err := chunk.IndexNAR(bytes.NewReader(nar))
		if err != nil {
			panic(err)
		}
		for i, off := range ix.Offsets() {
			chunks[ix[i].ID] = nar[off : off+uint64(ix[i].Size)]
		}
		forged[pi.Path.Hash] = ix
		return nil
	})
	return &lyingContent{
		Store: s,
		index: func(h nix.PathHash) (chunk.Index, error) {
			if ix, ok := forged[h]; ok {
				return ix, nil
			}
			return s.ChunkIndexOf(h)
		},
		chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
			if b, ok := chunks[id]; ok && uint32(len(b)) == size {
				return slices.Clone(b), nil
			}
			return s.ReadChunk(ctx, id, size)
		},
	}
}

// frameMsg is v as it travels in a stream: its CBOR, framed.
func frameMsg(v any) []byte {
	b, err := cbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return frame(b)
}

// readFrame reads one framed message of at most max bytes into v.
func readFrame(r io.Reader, max uint64, v any) error {
	br := bufio.NewReader(r)
	size, err := binary.ReadUvarint(br)
	if err != nil {
		return err
	}
	if size > max {
		return fmt.Errorf("a message of %d bytes", size)
	}
	msg := make([]byte, size)
	if _, err := io.ReadFull(br, msg); err != nil {
		return err
	}
	return cbor.Unmarshal(msg, v)
}

// cutChunksStream replaces n's chunks handler with one that answers the
// first request with a valid header and then only half the chunk's bytes
// before closing the stream: a truncation in the middle of the wire.
func cutChunksStream(t testing.TB, n *peerNode) {
	n.node.Host().SetStreamHandler(p2p.ProtoChunks, func(st network.Stream) {
		defer st.Close()
		var req p2p.ChunkRequest
		if err := readFrame(st, 1<<10, &req); err != nil || len(req.Chunk) != len(chunk.ID{}) {
			st.Reset()
			return
		}
		data, err := n.store.ReadChunk(context.Background(), chunk.ID(req.Chunk), req.Size)
		if err != nil {
			st.Reset()
			return
		}
		var w io.Writer = st
		if req.Zstd { // it speaks the protocol, compressed if asked
			zw, _ := zstd.NewWriter(st, zstd.WithWindowSize(1<<20))
			defer zw.Flush()
			w = zw
		}
		w.Write(frameMsg(&p2p.ChunkHeader{Seq: req.Seq, Length: uint32(len(data))}))
		w.Write(data[:len(data)/2])
	})
}

// liar is one kind of misbehaving peer.
type liar struct {
	name string
	// wrap decorates the liar's store; hook changes its node after start.
	wrap func(s *store.Store) p2p.Content
	hook func(t testing.TB, n *peerNode)
	// empty: the liar's store does not hold the closure.
	empty bool
	// bad: next to an honest peer, the liar must be recorded with bad
	// data and dropped.
	bad bool
	// noBytes: the liar must not be credited with any bytes.
	noBytes bool
	// alone: what the error says when the liar is the only peer; is, an
	// error it wraps.
	alone []string
	is    error
}

func liars() []liar {
	return []liar{
		{
			name: "flips a bit",
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					b, err := s.ReadChunk(ctx, id, size)
					if err == nil {
						b[len(b)/3] ^= 0x10
					}
					return b, err
				}}
			},
			bad: true, noBytes: true, alone: []string{"no peer left to fetch", "sent bad data", "does not hash to its ID", "resumes"},
		},
		{
			name: "sends another chunk",
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					return otherChunk(ctx, s, id, size)
				}}
			},
			bad: true, noBytes: true, alone: []string{"no peer left to fetch", "does not hash to its ID"},
		},
		{
			name: "truncates a chunk",
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					b, err := s.ReadChunk(ctx, id, size)
					return b[:len(b)/2], err
				}}
			},
			bad: true, noBytes: true, alone: []string{"no peer left to fetch", "sent bad data", "asked for"},
		},
		{
			name: "cuts the stream mid-chunk",
			hook: cutChunksStream,
			bad:  true, noBytes: true, alone: []string{"no peer left to fetch", "truncated chunk"},
		},
		{
			name: "stalls forever",
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}}
			},
			noBytes: true, alone: []string{"no peer left to fetch", "stalled"},
		},
		{
			name:  "claims paths it lacks",
			empty: true,
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s,
					info: func(h nix.PathHash) (*nix.PathInfo, error) {
						return &nix.PathInfo{Path: nix.Path{Hash: h, Name: "lie"}}, nil
					},
				}
			},
			noBytes: true, alone: []string{"said it has", "then had no info for it"},
		},
		{
			name: "refuses chunks it has",
			wrap: func(s *store.Store) p2p.Content {
				return &lyingContent{Store: s, chunk: func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					return nil, p2p.ErrNotServed
				}}
			},
			noBytes: true, alone: []string{"no peer left to fetch", "does not have it after all"},
		},
		{
			name: "forges a chunk index",
			wrap: func(s *store.Store) p2p.Content { return forger(s, 7) },
			bad:  true, alone: []string{"chunk index that does not produce its NAR"},
		},
		{
			// Slow, so that it is caught while other paths it described
			// still wait for chunks only it serves.
			name: "forges a chunk index, slowly",
			wrap: func(s *store.Store) p2p.Content {
				c := forger(s, 8).(*lyingContent)
				serve := c.chunk
				c.chunk = func(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
					time.Sleep(3 * time.Millisecond)
					return serve(ctx, id, size)
				}
				return c
			},
			bad: true, alone: []string{"chunk index that does not produce its NAR"},
		},
		{
			name:  "alters the narHash",
			wrap:  altersInfo(func(pi *nix.PathInfo) { pi.NarHash[0] ^= 1 }),
			alone: []string{"does not match"}, is: trust.ErrUntrusted,
		},
		{
			name:  "drops the references",
			wrap:  altersInfo(func(pi *nix.PathInfo) { pi.References = nil }),
			alone: []string{"does not match"}, is: trust.ErrUntrusted,
		},
		{
			name:  "strips the signature",
			wrap:  altersInfo(func(pi *nix.PathInfo) { pi.Sigs = nil }),
			alone: []string{"no signature"}, is: trust.ErrUntrusted,
		},
	}
}

// altersInfo is a peer that serves its store but changes every PathInfo
// it describes with alter.
func altersInfo(alter func(*nix.PathInfo)) func(*store.Store) p2p.Content {
	return func(s *store.Store) p2p.Content {
		return &lyingContent{Store: s, info: func(h nix.PathHash) (*nix.PathInfo, error) {
			pi, err := s.PathInfo(h)
			if err == nil {
				alter(pi)
			}
			return pi, err
		}}
	}
}

// faultClosure is the closure every fault test syncs: big enough that the
// scheduler hands chunks to every peer (each batch is 64 chunks).
const (
	faultPaths = 5
	faultSize  = 1 << 20
	faultSeed  = 11
)

func TestSyncFaults(t *testing.T) {
	for _, l := range liars() {
		t.Run(l.name, func(t *testing.T) {
			for _, withHonest := range []bool{false, true} {
				name := "alone"
				if withHonest {
					name = "with an honest peer"
				}
				t.Run(name, func(t *testing.T) { runFault(t, []liar{l}, withHonest) })
			}
		})
	}
}

// TestSyncOneHonestAmongLiars syncs from an honest peer and three liars of
// different kinds, each of which is asked first for what it lies about.
func TestSyncOneHonestAmongLiars(t *testing.T) {
	all := liars()
	pick := func(name string) liar {
		for _, l := range all {
			if l.name == name {
				return l
			}
		}
		panic(name)
	}
	for _, set := range [][]string{
		{"forges a chunk index", "flips a bit", "claims paths it lacks"},
		{"stalls forever", "alters the narHash", "cuts the stream mid-chunk"},
		{"forges a chunk index", "refuses chunks it has", "sends another chunk"},
	} {
		t.Run(strings.Join(set, ", "), func(t *testing.T) {
			var ls []liar
			for _, n := range set {
				ls = append(ls, pick(n))
			}
			runFault(t, ls, true)
		})
	}
}

// runFault syncs the fault closure into a fresh node from the liars, and
// from an honest peer if withHonest, and checks the outcome.
func runFault(t *testing.T, ls []liar, withHonest bool) {
	sk, kr := testKeys(t)
	keys := orderedKeys(t, len(ls)+1)
	var liarNodes []*peerNode
	for i, l := range ls {
		n := newNode(t, nodeOpts{key: keys[i], hook: l.hook, wrap: func(s *store.Store) p2p.Content {
			if !l.empty {
				closure(t, s, sk, faultPaths, faultSize, faultSeed)
			}
			if l.wrap == nil {
				return s
			}
			return l.wrap(s)
		}})
		liarNodes = append(liarNodes, n)
	}
	from := liarNodes
	var honest *peerNode
	var paths []*nix.PathInfo
	if withHonest {
		honest = newNode(t, nodeOpts{key: keys[len(ls)]})
		paths = closure(t, honest.store, sk, faultPaths, faultSize, faultSeed)
		from = append(from, honest)
	} else {
		ref := newNode(t, nodeOpts{}) // not connected: only to know the paths
		paths = closure(t, ref.store, sk, faultPaths, faultSize, faultSeed)
	}
	c := newNode(t, nodeOpts{})
	connect(t, c, from...)
	root := paths[len(paths)-1].Path

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := New(c.store, c.node, Options{Keys: kr, StallTimeout: 500 * time.Millisecond}).Fetch(ctx, []nix.Path{root})
	if ctx.Err() != nil {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Fatalf("sync hung: %v\n%s", err, b.String())
	}
	valid := checkNothingCorrupt(t, c.store, paths)
	if withHonest {
		if err != nil {
			t.Fatalf("sync with an honest peer failed: %v\nreport: %+v", err, rep)
		}
		requireSameClosure(t, honest.store, c.store, paths)
		requireNoSpool(t, c.home)
		for i, l := range ls {
			pr := peerReport(rep, liarNodes[i].node.ID())
			t.Logf("%s: %+v", l.name, pr)
			if l.bad && (pr.BadData == 0 || pr.Dropped == "") {
				t.Errorf("%s: not recorded as a source of bad data and dropped: %+v", l.name, pr)
			}
			if l.noBytes && pr.BytesFetched > 0 {
				t.Errorf("%s: credited with %d bytes", l.name, pr.BytesFetched)
			}
		}
		return
	}
	// The liar alone: a clear error.
	l := ls[0]
	if err == nil {
		t.Fatalf("sync from a peer that %s succeeded (%d paths valid)", l.name, valid)
	}
	t.Logf("error: %v", err)
	for _, s := range l.alone {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q: %v", s, err)
		}
	}
	if l.is != nil && !errors.Is(err, l.is) {
		t.Errorf("error does not wrap %v: %v", l.is, err)
	}
	if valid == len(paths) {
		t.Fatalf("every path became valid although the sync failed")
	}
}

// TestSyncClosureNotClosed: the only peer lacks a reference of the root,
// so the closure cannot be completed; the error names the missing path and
// nothing becomes valid.
func TestSyncClosureNotClosed(t *testing.T) {
	sk, kr := testKeys(t)
	var paths []*nix.PathInfo
	a := newNode(t, nodeOpts{wrap: func(s *store.Store) p2p.Content {
		paths = closure(t, s, sk, 3, 100<<10, 12)
		hidden := paths[0].Path.Hash
		return &lyingContent{Store: s,
			info: func(h nix.PathHash) (*nix.PathInfo, error) {
				if h == hidden {
					return nil, nix.ErrNotValid
				}
				return s.PathInfo(h)
			},
			index: func(h nix.PathHash) (chunk.Index, error) {
				if h == hidden {
					return nil, nix.ErrNotValid
				}
				return s.ChunkIndexOf(h)
			},
		}
	}})
	c := newNode(t, nodeOpts{})
	connect(t, c, a)
	_, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{paths[2].Path})
	if err == nil {
		t.Fatal("sync of a closure missing a reference succeeded")
	}
	missing := paths[0].Path.Abs(c.store.StoreDir())
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no peer has it") {
		t.Fatalf("error does not name the missing path %s: %v", missing, err)
	}
	if n := checkNothingCorrupt(t, c.store, paths); n != 0 {
		t.Fatalf("%d paths became valid", n)
	}
}

// TestSyncBusySeeder: a seeder whose first have queries fail (a room of
// hundreds asks it at once) is asked again, not taken to lack the
// closure: before, the sync failed with "no peer has it".
func TestSyncBusySeeder(t *testing.T) {
	defer func(d time.Duration) { askRetry = d }(askRetry)
	askRetry = 10 * time.Millisecond
	sk, kr := testKeys(t)
	var paths []*nix.PathInfo
	a := newNode(t, nodeOpts{hook: func(t testing.TB, n *peerNode) {
		paths = closure(t, n.store, sk, 3, 100<<10, 13)
		var asked atomic.Int32
		n.node.Host().SetStreamHandler(p2p.ProtoHave, func(st network.Stream) {
			defer st.Close()
			var req p2p.HaveRequest
			if asked.Add(1) <= 2 || readFrame(st, 1<<20, &req) != nil {
				st.Reset() // too busy to answer
				return
			}
			bits := make([]byte, (len(req.Hashes)+7)/8)
			for i, h := range req.Hashes {
				if _, err := n.store.PathInfo(nix.PathHash(h)); err == nil {
					bits[i/8] |= 1 << (i % 8)
				}
			}
			st.Write(frameMsg(&p2p.HaveResponse{Bitmap: bits}))
		})
	}})
	c := newNode(t, nodeOpts{})
	connect(t, c, a)
	if _, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{paths[2].Path}); err != nil {
		t.Fatalf("sync from a seeder busy at first: %v", err)
	}
}
