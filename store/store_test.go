package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeTree creates files under dir from a map of relative path to content;
// a content starting with "->" makes a symlink, "x:" an executable.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(content, "->"):
			if err := os.Symlink(content[2:], p); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(content, "x:"):
			if err := os.WriteFile(p, []byte(content[2:]), 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func narOf(t testing.TB, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := nix.DumpNAR(&b, path); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestAddTreeMatchesNixVectors(t *testing.T) {
	s := openTestStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"hello.txt": "hello\n",
		"tdir/a":    "a", "tdir/B": "B", "tdir/run.sh": "x:#!/bin/sh\necho hi\n",
		"tdir/link": "->run.sh", "tdir/sub/empty": "",
	})
	for _, tc := range []struct{ src, want string }{
		{"hello.txt", "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"},
		{"tdir", "gb1vj5nysdf2qkllb1kb63q5dyjlg92j-tdir"},
	} {
		pi, err := s.AddTree(context.Background(), filepath.Join(dir, tc.src), tc.src)
		if err != nil {
			t.Fatal(err)
		}
		if pi.Path.String() != tc.want {
			t.Errorf("AddTree(%s) = %s, want %s", tc.src, pi.Path, tc.want)
		}
		// The stored tree's NAR is the source's NAR.
		if !bytes.Equal(narOf(t, s.TreePath(pi.Path)), narOf(t, filepath.Join(dir, tc.src))) {
			t.Errorf("%s: stored tree differs from source", tc.src)
		}
		if pi.CA != "fixed:r:"+pi.NarHash.String() {
			t.Errorf("%s: CA = %q", tc.src, pi.CA)
		}
	}
}

func TestStoredTreeIsReadOnly(t *testing.T) {
	s := openTestStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"d/f": "data", "d/x": "x:run"})
	pi, err := s.AddTree(context.Background(), filepath.Join(dir, "d"), "d")
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]os.FileMode{"f": 0o444, "x": 0o555} {
		fi, err := os.Lstat(filepath.Join(s.TreePath(pi.Path), rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%q: mode %v, want %v", rel, fi.Mode(), want)
		}
	}
	// Directories stay owner-writable: the owner can remove a home.
	if fi, _ := os.Lstat(s.TreePath(pi.Path)); fi.Mode().Perm()&0o200 == 0 {
		t.Errorf("tree directory mode %v: the owner cannot remove its entries", fi.Mode())
	}
}

func TestWriteNARRangesAndChunks(t *testing.T) {
	s := openTestStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"big": string(randomBytes(1, 3<<20)), "small": "s", "sub/mid": string(randomBytes(2, 200<<10)), "sub/l": "->../big"})
	pi, err := s.AddTree(context.Background(), dir, "tree")
	if err != nil {
		t.Fatal(err)
	}
	nar := narOf(t, dir)
	if uint64(len(nar)) != pi.NarSize || sha256.Sum256(nar) != pi.NarHash {
		t.Fatal("path info does not describe the NAR")
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 3))
	for range 200 {
		off := r.Int64N(int64(len(nar)))
		n := r.Int64N(int64(len(nar)) - off + 1)
		var b bytes.Buffer
		if err := s.WriteNAR(ctx, &b, pi.Path, off, n); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), nar[off:off+n]) {
			t.Fatalf("WriteNAR(%d, %d) differs from the NAR", off, n)
		}
	}
	ix, err := s.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if ix.ID() != pi.ChunkIndex || ix.NarSize() != pi.NarSize {
		t.Fatal("chunk index does not match path info")
	}
	if len(ix) < 10 {
		t.Fatalf("only %d chunks for a %d-byte NAR", len(ix), len(nar))
	}
	for i, off := range ix.Offsets() {
		c := ix[i]
		if chunk.Sum(nar[off:off+uint64(c.Size)]) != c.ID {
			t.Fatalf("chunk %d does not hash to its ID", i)
		}
		got, err := s.ReadChunk(ctx, c.ID, c.Size)
		if err != nil || !bytes.Equal(got, nar[off:off+uint64(c.Size)]) {
			t.Fatalf("ReadChunk %d: %v", i, err)
		}
	}
	if _, err := s.ReadChunk(ctx, chunk.Sum([]byte("absent")), 6); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("ReadChunk of an absent chunk: %v", err)
	}
}

// addNARFor adds a tree as an input-addressed path with the given refs.
func addNARFor(t testing.TB, s *Store, name string, content string, refs ...nix.Path) *nix.PathInfo {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{name: content})
	nar := narOf(t, filepath.Join(dir, name))
	p, err := nix.MakePath(s.storeDir, "output:out", nix.Hash(sha256.Sum256([]byte(name+content))), name)
	if err != nil {
		t.Fatal(err)
	}
	pi, err := s.AddNAR(context.Background(), &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar)), NarSize: uint64(len(nar)), References: refs}, bytes.NewReader(nar))
	if err != nil {
		t.Fatalf("adding %s: %v", name, err)
	}
	return pi
}

func TestAddNARRejects(t *testing.T) {
	s := openTestStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"f": "content"})
	nar := narOf(t, filepath.Join(dir, "f"))
	good := nix.Hash(sha256.Sum256(nar))
	p, _ := nix.MakePath(s.storeDir, "output:out", good, "f")
	missing, _ := nix.MakePath(s.storeDir, "output:out", nix.Hash{1}, "missing")
	caPath, _ := nix.MakeSourcePath(s.storeDir, good, "f", nil, false)
	for _, tc := range []struct {
		name string
		info nix.PathInfo
		nar  []byte
		want string
	}{
		{"wrong hash", nix.PathInfo{Path: p, NarHash: nix.Hash{9}}, nar, "NAR hash mismatch"},
		{"wrong size", nix.PathInfo{Path: p, NarHash: good, NarSize: 7}, nar, "NAR hash mismatch"},
		{"missing reference", nix.PathInfo{Path: p, NarHash: good, References: []nix.Path{missing}}, nar, "is not valid"},
		{"truncated", nix.PathInfo{Path: p}, nar[:len(nar)-8], "truncated"},
		{"trailing bytes", nix.PathInfo{Path: p}, append(slices.Clone(nar), 0), "trailing"},
		{"CA that does not recompute", nix.PathInfo{Path: p, CA: "fixed:r:" + good.String()}, nar, "content address"},
		{"CA with wrong hash", nix.PathInfo{Path: caPath, CA: "fixed:r:" + nix.Hash{3}.String()}, nar, "CA claims"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.AddNAR(context.Background(), &tc.info, bytes.NewReader(tc.nar))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if ok, _ := s.IsValid(tc.info.Path); ok {
				t.Fatal("path became valid")
			}
			ents, _ := os.ReadDir(s.treeDir)
			if len(ents) != 0 {
				t.Fatalf("left %d entries in the store dir", len(ents))
			}
		})
	}
}

func TestClosureAndGC(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	leaf := addNARFor(t, s, "leaf", "leaf data")
	mid := addNARFor(t, s, "mid", "mid", leaf.Path)
	top := addNARFor(t, s, "top", "top", mid.Path, leaf.Path)
	other := addNARFor(t, s, "other", "other", leaf.Path)
	cl, err := s.Closure(top.Path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, pi := range cl {
		names = append(names, pi.Path.Name)
	}
	if !slices.Equal(names, []string{"leaf", "mid", "top"}) {
		t.Fatalf("closure order %v, want references first", names)
	}
	if err := s.AddRoot(mid.Path); err != nil {
		t.Fatal(err)
	}
	dry, err := s.GC(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Removed) != 2 {
		t.Fatalf("dry run would remove %v", dry.Removed)
	}
	if ok, _ := s.IsValid(top.Path); !ok {
		t.Fatal("dry run removed something")
	}
	// Reading a chunk of top fills the location and skeleton caches; GC
	// must empty them, or a deleted path would still be served.
	topIndex, err := s.ChunkIndexOf(top.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadChunk(ctx, topIndex[0].ID, topIndex[0].Size); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadChunk(ctx, topIndex[0].ID, topIndex[0].Size); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("a chunk of a collected path is still served: %v", err)
	}
	want := []nix.Path{other.Path, top.Path}
	slices.SortFunc(want, nix.Path.Compare)
	if !slices.Equal(res.Removed, want) || res.BytesFreed != top.NarSize+other.NarSize {
		t.Fatalf("GC removed %v (%d bytes), want %v", res.Removed, res.BytesFreed, want)
	}
	for _, p := range []*nix.PathInfo{leaf, mid} {
		if ok, _ := s.IsValid(p.Path); !ok {
			t.Errorf("%s was collected but is in a root's closure", p.Path)
		}
	}
	for _, p := range want {
		if _, err := os.Lstat(s.TreePath(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: tree still on disk", p)
		}
	}
	// Chunks of collected paths are forgotten; those of kept ones remain.
	if locs, _ := s.FindChunk(top.ChunkIndex); len(locs) != 0 {
		t.Error("chunk locations of a collected path remain")
	}
	if refs, _ := s.Referrers(leaf.Path.Hash); len(refs) != 1 || refs[0] != mid.Path.Hash {
		t.Errorf("referrers of leaf after GC = %v, want only mid", refs)
	}
	if err := s.RemoveRoot(mid.Path); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GC(ctx, false); err != nil || len(res.Removed) != 2 {
		t.Fatalf("GC without roots removed %v, %v", res, err)
	}
	if n, _, _ := s.StoreSize(ctx); n != 0 {
		t.Fatalf("%d paths left", n)
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a/f": "content", "b/f": "content b", "c/f": "c", "d/f": "d", "e/l": "->x"})
	paths := map[string]*nix.PathInfo{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		pi, err := s.AddTree(ctx, filepath.Join(dir, n), n)
		if err != nil {
			t.Fatal(err)
		}
		paths[n] = pi
	}
	count := func() []Problem {
		var ps []Problem
		n, err := s.Verify(ctx, nil, func(p Problem) { ps = append(ps, p) })
		if err != nil || n != 5 {
			t.Fatalf("Verify checked %d: %v", n, err)
		}
		return ps
	}
	if ps := count(); len(ps) != 0 {
		t.Fatalf("fresh store has problems: %v", ps)
	}
	tree := func(n string) string { return s.TreePath(paths[n].Path) }
	os.Chmod(tree("a"), 0o755)
	os.Chmod(filepath.Join(tree("a"), "f"), 0o644)
	os.WriteFile(filepath.Join(tree("a"), "f"), []byte("CONTENT"), 0o644) // same size, other bytes
	os.Chmod(tree("b"), 0o755)
	os.WriteFile(filepath.Join(tree("b"), "extra"), nil, 0o644) // an added file
	os.Chmod(filepath.Join(tree("c"), "f"), 0o755)              // now executable
	nix.RemoveTree(tree("d"))                                   // gone
	os.Chmod(tree("e"), 0o755)
	os.Remove(filepath.Join(tree("e"), "l"))
	os.Symlink("y", filepath.Join(tree("e"), "l")) // retargeted
	got := map[string]string{}
	for _, p := range count() {
		got[p.Path.Name] = p.Kind
	}
	want := map[string]string{"a": "corrupt", "b": "corrupt", "c": "corrupt", "d": "missing", "e": "corrupt"}
	if len(got) != len(want) {
		t.Fatalf("problems %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	home := t.TempDir()
	s, err := Open(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(home, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "in use by pid") {
		t.Fatalf("second Open: %v", err)
	}
	s.Close()
	s2, err := Open(home, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
	if _, err := Open(home, Options{StoreDir: "/other/store"}); err == nil || !strings.Contains(err.Error(), "--store-dir /nix/store") {
		t.Fatalf("Open with another store dir: %v", err)
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	home := t.TempDir()
	s, err := Open(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"f": "kept"})
	kept, err := s.AddTree(context.Background(), filepath.Join(dir, "f"), "f")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What a crash can leave: a temp tree, and a renamed tree never registered.
	os.MkdirAll(filepath.Join(home, "store", ".tmp-0123", "x"), 0o755)
	os.MkdirAll(filepath.Join(home, "store", "0000000000000000000000000000000a-ghost"), 0o555)
	s, err = Open(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ents, _ := os.ReadDir(filepath.Join(home, "store"))
	if len(ents) != 1 || ents[0].Name() != kept.Path.String() {
		t.Fatalf("store dir holds %v after Open", ents)
	}
}

func TestRebootReverifiesUnsyncedPaths(t *testing.T) {
	home := t.TempDir()
	ctx := context.Background()
	s, err := Open(home, Options{BootID: "boot-1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := addNARFor(t, s, "leaf", "leaf data")
	top := addNARFor(t, s, "top", "top", leaf.Path)
	other := addNARFor(t, s, "other", "other")
	s.Close()
	// A power loss ate leaf's data before writeback.
	f := s.TreePath(leaf.Path)
	os.Chmod(f, 0o644)
	os.WriteFile(f, nil, 0o444)

	s, err = Open(home, Options{BootID: "boot-2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p    *nix.PathInfo
		want bool
	}{{leaf, false}, {top, false}, {other, true}} {
		if ok, _ := s.IsValid(tc.p.Path); ok != tc.want {
			t.Errorf("%s valid = %v after reboot, want %v", tc.p.Path.Name, ok, tc.want)
		}
	}
	if m, _ := s.unsynced(); len(m) != 0 {
		t.Errorf("marks remain after recovery: %v", m)
	}
	var problems []Problem
	s.Verify(ctx, nil, func(p Problem) { problems = append(problems, p) })
	if len(problems) != 0 {
		t.Errorf("problems after recovery: %v", problems)
	}
	s.Close()
}

func TestSyncClearsMarks(t *testing.T) {
	s := openTestStore(t)
	addNARFor(t, s, "p", "data")
	if m, _ := s.unsynced(); len(m) != 1 {
		t.Fatalf("%d marks after a write, want 1", len(m))
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.unsynced(); len(m) != 0 {
		t.Fatalf("%d marks after Sync", len(m))
	}
}

// BenchmarkReadAbsentChunk is what a cold sync pays per chunk to learn it
// must fetch it.
func BenchmarkReadAbsentChunk(b *testing.B) {
	s := openTestStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.ReadChunk(ctx, chunk.Sum([]byte{byte(i), byte(i >> 8)}), chunk.AvgSize)
	}
}

// TestStageBeforeReferences: a NAR can be unpacked and checked before its
// references are valid (sync unpacks paths in the order they arrive); only
// the commit needs them, and a staged tree is not a valid path meanwhile.
func TestStageBeforeReferences(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	dep, _ := nix.MakePath(s.storeDir, "output:out", nix.Hash{7}, "dep")
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"top": "top data"})
	nar := narOf(t, filepath.Join(dir, "top"))
	top, _ := nix.MakePath(s.storeDir, "output:out", nix.Hash{8}, "top")
	info := &nix.PathInfo{Path: top, NarHash: nix.Hash(sha256.Sum256(nar)), NarSize: uint64(len(nar)), References: []nix.Path{dep}}

	x, err := s.StageNAR(ctx, info, nil, bytes.NewReader(nar))
	if err != nil {
		t.Fatalf("staging before the reference is valid: %v", err)
	}
	if ok, _ := s.IsValid(top); ok {
		t.Fatal("a staged path is valid before its commit")
	}
	if _, err := x.Commit(); err == nil || !strings.Contains(err.Error(), "is not valid") {
		t.Fatalf("commit with its reference missing: %v", err)
	}
	if ents, _ := os.ReadDir(s.treeDir); len(ents) != 0 {
		t.Fatalf("a failed commit left %d entries in the tree directory", len(ents))
	}
	// The reference arrives; a fresh stage of the same NAR now commits.
	dir2 := t.TempDir()
	writeTree(t, dir2, map[string]string{"dep": "dep data"})
	depNAR := narOf(t, filepath.Join(dir2, "dep"))
	if _, err := s.AddNAR(ctx, &nix.PathInfo{Path: dep, NarHash: nix.Hash(sha256.Sum256(depNAR)), NarSize: uint64(len(depNAR))}, bytes.NewReader(depNAR)); err != nil {
		t.Fatal(err)
	}
	x, err = s.StageNAR(ctx, info, nil, bytes.NewReader(nar))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Commit(); err != nil {
		t.Fatalf("commit once the reference is valid: %v", err)
	}
	if ok, _ := s.IsValid(top); !ok {
		t.Fatal("committed path is not valid")
	}
	var probs []Problem
	if _, err := s.Verify(ctx, nil, func(p Problem) { probs = append(probs, p) }); err != nil || len(probs) > 0 {
		t.Fatalf("store does not verify: %v %v", err, probs)
	}
}

// TestChunkDataManyFiles serves every chunk of a tree of more files than
// the store keeps open, from several goroutines at once: files are evicted
// while others read them, and every chunk must still come back whole.
func TestChunkDataManyFiles(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	files := map[string]string{}
	for i := range 3 * maxOpenFiles {
		files[fmt.Sprintf("f%03d", i)] = string(randomBytes(uint64(i), 40<<10))
	}
	writeTree(t, dir, files)
	pi, err := s.AddTree(ctx, dir, "many")
	if err != nil {
		t.Fatal(err)
	}
	ix, err := s.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk.MaxSize)
			for i := range ix {
				c := ix[(i+g*len(ix)/4)%len(ix)]
				data, err := s.ChunkData(ctx, c.ID, c.Size, buf)
				if err == nil && chunk.Sum(data) != c.ID {
					err = fmt.Errorf("chunk %s came back with other bytes", c.ID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(s.files.files); n > maxOpenFiles {
		t.Errorf("%d files open, at most %d", n, maxOpenFiles)
	}
}
