// Package storetest is the conformance suite every store implementation
// passes: the embedded store (Badger and trees) today, Nix's own store
// next. It checks the contract the rest of trove relies on through the
// small interfaces its packages define (the cache endpoint and bundles
// read paths and NARs, sync and imports add them): a path is valid only
// with its whole closure, bytes that do not match their PathInfo change
// nothing, a NAR read back is byte-identical to the one added, and the
// errors are nix.ErrNotValid and nix.ErrHashMismatch whichever store
// answers.
//
// Only tests import it (it imports testing).
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// Store is the contract under test: what trove's packages need of any
// store, the union of the interfaces they define where they use it.
type Store interface {
	StoreDir() string
	IsValid(p nix.Path) (bool, error)
	Lookup(p nix.Path) (*nix.PathInfo, error)
	PathInfo(h nix.PathHash) (*nix.PathInfo, error)
	Closure(roots ...nix.Path) ([]*nix.PathInfo, error)
	WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error
	AddNAR(ctx context.Context, info *nix.PathInfo, r io.Reader) (*nix.PathInfo, error)
}

// ChunkStore is what serving peers needs besides: the chunk index of a
// valid path and the bytes of its chunks. A store that implements it is
// checked for it too.
type ChunkStore interface {
	Store
	ChunkIndexOf(h nix.PathHash) (chunk.Index, error)
	ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error)
}

// Test is one case of the suite: fn fails t if s breaks the contract.
type Test struct {
	Name string
	Fn   func(t testing.TB, s Store)
}

// Tests lists the suite's cases, for running one against a store whose
// failure is expected (to show the suite catches it); Run runs them all.
func Tests() []Test {
	return []Test{
		{"AddThenRead", testAddThenRead},
		{"NARRanges", testNARRanges},
		{"ClosureOrder", testClosureOrder},
		{"AddIsIdempotent", testAddIsIdempotent},
		{"ConcurrentAdds", testConcurrentAdds},
		{"UnknownPath", testUnknownPath},
		{"WrongHashChangesNothing", testWrongHash},
		{"WrongSizeChangesNothing", testWrongSize},
		{"TruncatedNARChangesNothing", testTruncated},
		{"BadNARChangesNothing", testBadNAR},
		{"MissingReferenceRefused", testMissingReference},
		{"ContentAddressChecked", testContentAddress},
		{"Chunks", testChunks},
	}
}

// Run runs the suite against fresh stores from open, one per subtest.
func Run(t *testing.T, open func(t testing.TB) Store) {
	for _, tt := range Tests() {
		t.Run(tt.Name, func(t *testing.T) { tt.Fn(t, open(t)) })
	}
}

// fixture is a tree made into a NAR with the PathInfo that describes it.
type fixture struct {
	nar  []byte
	info *nix.PathInfo
}

// makePath builds a tree under a temp dir (a file, an executable, a
// symlink, a subdirectory, a large file of random bytes cut into several
// chunks, and the absolute paths of refs written into a file, as real
// store paths hold them) and names it as a source path with refs.
func makePath(t testing.TB, s Store, name string, seed uint64, refs ...nix.Path) fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "README"), []byte("hello from "+name+"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "bin", "run"), []byte("#!/bin/sh\necho "+name+"\n"), 0o755))
	must(t, os.Symlink("bin/run", filepath.Join(dir, "link")))
	r := rand.New(rand.NewPCG(seed, seed))
	big := make([]byte, 600<<10)
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	must(t, os.WriteFile(filepath.Join(dir, "data"), big, 0o644))
	var deps bytes.Buffer
	for _, ref := range refs {
		fmt.Fprintln(&deps, ref.Abs(s.StoreDir()))
	}
	must(t, os.WriteFile(filepath.Join(dir, "deps"), deps.Bytes(), 0o644))
	var nar bytes.Buffer
	if _, err := nix.DumpNAR(&nar, dir); err != nil {
		t.Fatal(err)
	}
	h := nix.Hash(sha256.Sum256(nar.Bytes()))
	p, err := nix.MakeSourcePath(s.StoreDir(), h, name, refs, false)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{nar.Bytes(), &nix.PathInfo{Path: p, NarHash: h, NarSize: uint64(nar.Len()), References: refs}}
}

func (f fixture) add(t testing.TB, s Store) *nix.PathInfo {
	t.Helper()
	pi, err := s.AddNAR(context.Background(), clone(f.info), bytes.NewReader(f.nar))
	if err != nil {
		t.Fatalf("AddNAR %s: %v", f.info.Path, err)
	}
	return pi
}

func clone(pi *nix.PathInfo) *nix.PathInfo {
	c := *pi
	c.References = slices.Clone(pi.References)
	return &c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readNAR(t testing.TB, s Store, p nix.Path, off, n int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := s.WriteNAR(context.Background(), &b, p, off, n); err != nil {
		t.Fatalf("WriteNAR %s [%d,+%d): %v", p, off, n, err)
	}
	return b.Bytes()
}

// requireAbsent checks that p is not valid by every way of asking.
func requireAbsent(t testing.TB, s Store, p nix.Path) {
	t.Helper()
	if ok, err := s.IsValid(p); err != nil || ok {
		t.Fatalf("IsValid(%s) = %v, %v; want false, nil", p, ok, err)
	}
	if _, err := s.Lookup(p); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("Lookup(%s) = %v; want ErrNotValid", p, err)
	}
	if _, err := s.PathInfo(p.Hash); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("PathInfo(%s) = %v; want ErrNotValid", p, err)
	}
	if _, err := s.Closure(p); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("Closure(%s) = %v; want ErrNotValid", p, err)
	}
}

func samePathInfo(t testing.TB, got, want *nix.PathInfo) {
	t.Helper()
	if got.Path != want.Path || got.NarHash != want.NarHash || got.NarSize != want.NarSize ||
		!slices.Equal(got.References, want.References) || got.Deriver != want.Deriver || got.CA != want.CA ||
		!slices.Equal(got.Sigs, want.Sigs) {
		t.Fatalf("PathInfo differs:\n got %+v\nwant %+v", got, want)
	}
}

func testAddThenRead(t testing.TB, s Store) {
	f := makePath(t, s, "hello", 1)
	added := f.add(t, s)
	samePathInfo(t, added, f.info)
	if ok, err := s.IsValid(f.info.Path); err != nil || !ok {
		t.Fatalf("IsValid after AddNAR = %v, %v", ok, err)
	}
	for _, get := range []func() (*nix.PathInfo, error){
		func() (*nix.PathInfo, error) { return s.Lookup(f.info.Path) },
		func() (*nix.PathInfo, error) { return s.PathInfo(f.info.Path.Hash) },
	} {
		pi, err := get()
		if err != nil {
			t.Fatal(err)
		}
		samePathInfo(t, pi, f.info)
	}
	if got := readNAR(t, s, f.info.Path, 0, -1); !bytes.Equal(got, f.nar) {
		t.Fatalf("the NAR read back (%d bytes) differs from the one added (%d bytes)", len(got), len(f.nar))
	}
}

func testNARRanges(t testing.TB, s Store) {
	f := makePath(t, s, "ranges", 2)
	f.add(t, s)
	size := int64(len(f.nar))
	r := rand.New(rand.NewPCG(3, 3))
	cases := [][2]int64{{0, 1}, {0, 8}, {size - 1, 1}, {size - 8, 8}, {100, size - 100}, {size / 2, -1}}
	for range 20 {
		off := r.Int64N(size)
		cases = append(cases, [2]int64{off, r.Int64N(size - off + 1)})
	}
	for _, c := range cases {
		off, n := c[0], c[1]
		want := f.nar[off:]
		if n >= 0 {
			want = want[:n]
		}
		if got := readNAR(t, s, f.info.Path, off, n); !bytes.Equal(got, want) {
			t.Fatalf("WriteNAR [%d,+%d) differs from the NAR's bytes", off, n)
		}
	}
}

func testClosureOrder(t testing.TB, s Store) {
	leaf := makePath(t, s, "leaf", 4)
	leaf.add(t, s)
	mid := makePath(t, s, "mid", 5, leaf.info.Path)
	mid.add(t, s)
	top := makePath(t, s, "top", 6, leaf.info.Path, mid.info.Path)
	top.add(t, s)
	got, err := s.Closure(top.info.Path)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[nix.Path]int{}
	for i, pi := range got {
		if _, dup := pos[pi.Path]; dup {
			t.Fatalf("Closure lists %s twice", pi.Path)
		}
		pos[pi.Path] = i
	}
	if len(got) != 3 {
		t.Fatalf("Closure has %d paths, want 3", len(got))
	}
	for _, pi := range got {
		for _, ref := range pi.References {
			if ref != pi.Path && pos[ref] > pos[pi.Path] {
				t.Fatalf("Closure lists %s before its reference %s", pi.Path, ref)
			}
		}
	}
}

func testAddIsIdempotent(t testing.TB, s Store) {
	f := makePath(t, s, "twice", 7)
	f.add(t, s)
	samePathInfo(t, f.add(t, s), f.info)
	if got := readNAR(t, s, f.info.Path, 0, -1); !bytes.Equal(got, f.nar) {
		t.Fatal("the NAR differs after adding it twice")
	}
}

func testConcurrentAdds(t testing.TB, s Store) {
	f := makePath(t, s, "racing", 8)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := s.AddNAR(context.Background(), clone(f.info), bytes.NewReader(f.nar))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent AddNAR: %v", err)
		}
	}
	if got := readNAR(t, s, f.info.Path, 0, -1); !bytes.Equal(got, f.nar) {
		t.Fatal("the NAR differs after concurrent adds")
	}
}

func testUnknownPath(t testing.TB, s Store) {
	f := makePath(t, s, "never-added", 9)
	requireAbsent(t, s, f.info.Path)
	var b bytes.Buffer
	if err := s.WriteNAR(context.Background(), &b, f.info.Path, 0, -1); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("WriteNAR of an unknown path = %v; want ErrNotValid", err)
	}
}

func testWrongHash(t testing.TB, s Store) {
	f := makePath(t, s, "liar", 10)
	info := clone(f.info)
	info.NarHash[0] ^= 1
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(f.nar)); !errors.Is(err, nix.ErrHashMismatch) {
		t.Fatalf("AddNAR with a wrong narHash = %v; want ErrHashMismatch", err)
	}
	requireAbsent(t, s, f.info.Path)
	// And the right bytes still go in afterwards: nothing was left behind.
	f.add(t, s)
}

func testWrongSize(t testing.TB, s Store) {
	f := makePath(t, s, "short", 11)
	info := clone(f.info)
	info.NarSize--
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(f.nar)); !errors.Is(err, nix.ErrHashMismatch) {
		t.Fatalf("AddNAR with a wrong narSize = %v; want ErrHashMismatch", err)
	}
	requireAbsent(t, s, f.info.Path)
}

func testTruncated(t testing.TB, s Store) {
	f := makePath(t, s, "truncated", 12)
	for _, n := range []int{0, 1, len(f.nar) / 2, len(f.nar) - 1} {
		if _, err := s.AddNAR(context.Background(), clone(f.info), bytes.NewReader(f.nar[:n])); err == nil {
			t.Fatalf("AddNAR of the first %d of %d bytes succeeded", n, len(f.nar))
		}
		requireAbsent(t, s, f.info.Path)
	}
}

func testBadNAR(t testing.TB, s Store) {
	f := makePath(t, s, "garbage", 13)
	bad := slices.Clone(f.nar)
	copy(bad[8:], "nix-archive-2") // a NAR of another format, same length
	info := clone(f.info)
	info.NarHash = sha256.Sum256(bad)
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(bad)); err == nil {
		t.Fatal("AddNAR accepted a malformed NAR")
	}
	requireAbsent(t, s, f.info.Path)
}

func testMissingReference(t testing.TB, s Store) {
	dep := makePath(t, s, "dep", 14)
	f := makePath(t, s, "needs-dep", 15, dep.info.Path)
	if _, err := s.AddNAR(context.Background(), clone(f.info), bytes.NewReader(f.nar)); err == nil {
		t.Fatal("AddNAR made a path valid whose reference is not")
	}
	requireAbsent(t, s, f.info.Path)
	dep.add(t, s)
	f.add(t, s)
}

func testContentAddress(t testing.TB, s Store) {
	f := makePath(t, s, "fixed", 16)
	info := clone(f.info)
	info.CA = "fixed:r:" + f.info.NarHash.String()
	pi, err := s.AddNAR(context.Background(), info, bytes.NewReader(f.nar))
	if err != nil {
		t.Fatalf("AddNAR of a true content address: %v", err)
	}
	samePathInfo(t, pi, info)

	// A content address that names other content: the path's name hash
	// does not recompute from it.
	g := makePath(t, s, "fixed-liar", 17)
	info = clone(g.info)
	other := sha256.Sum256([]byte("other"))
	info.CA = "fixed:r:" + nix.Hash(other).String()
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(g.nar)); err == nil {
		t.Fatal("AddNAR accepted a content address its NAR does not hash to")
	}
	requireAbsent(t, s, g.info.Path)
}

func testChunks(t testing.TB, s Store) {
	cs, ok := s.(ChunkStore)
	if !ok {
		t.Skip("this store does not serve chunks")
	}
	f := makePath(t, s, "chunked", 18)
	pi := f.add(t, s)
	ix, err := cs.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	// A store may index a path when first asked (Nix's store does); from
	// then on its PathInfo names the index.
	if pi, err = s.Lookup(pi.Path); err != nil {
		t.Fatal(err)
	}
	if ix.ID() != pi.ChunkIndex {
		t.Fatalf("the chunk index's ID %s is not the PathInfo's %s", ix.ID(), pi.ChunkIndex)
	}
	want, err := chunk.IndexNAR(bytes.NewReader(f.nar))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ix, want) {
		t.Fatal("the stored chunk index differs from cutting the NAR afresh")
	}
	if len(ix) < 3 {
		t.Fatalf("the fixture has %d chunks; the test wants several", len(ix))
	}
	var joined []byte
	for _, ref := range ix {
		b, err := cs.ReadChunk(context.Background(), ref.ID, ref.Size)
		if err != nil {
			t.Fatalf("ReadChunk %s: %v", ref.ID, err)
		}
		if chunk.Sum(b) != ref.ID {
			t.Fatalf("ReadChunk %s returned other bytes", ref.ID)
		}
		joined = append(joined, b...)
	}
	if !bytes.Equal(joined, f.nar) {
		t.Fatal("the chunks joined differ from the NAR")
	}
	if _, err := cs.ChunkIndexOf(makePath(t, s, "none", 19).info.Path.Hash); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("ChunkIndexOf an unknown path = %v; want ErrNotValid", err)
	}
}
