package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// machine is one computer's trove: a store, its trusted keys and its
// manifest history, and nothing else (no network).
type machine struct {
	home  string
	store *store.Store
	keys  *manifest.Keyring
	hist  *manifest.History
}

func newMachine(t testing.TB) *machine {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { makeWritable(dir) })
	home := filepath.Join(dir, "home")
	s, err := store.Open(home, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	keys, err := manifest.LoadKeyring(manifest.TrustedKeysPath(home))
	if err != nil {
		t.Fatal(err)
	}
	return &machine{home: home, store: s, keys: keys, hist: manifest.OpenHistory(home, keys)}
}

// makeWritable lets a non-root user remove read-only store trees.
func makeWritable(root string) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// publish publishes the next generation of name on m, as sync.Publish
// does, trusting key there as the CLI does. (This package's tests do not
// import sync: it links libp2p, whose size slows coverage-guided fuzzing
// of FuzzReader a hundredfold. The offline reproduction with sync.Publish
// and sync.Activate is in agent/source_test.go and cmd/trove.)
func publish(t testing.TB, m *machine, key manifest.SecretKey, name string, root nix.Path, activate string) *manifest.Manifest {
	t.Helper()
	if err := m.keys.Add(key.Public(), "*"); err != nil {
		t.Fatal(err)
	}
	closure, err := m.store.Closure(root)
	if err != nil {
		t.Fatal(err)
	}
	man := &manifest.Manifest{Name: name, Generation: 1, Root: root, Activate: activate, Created: time.Now(), Paths: closure}
	if prev, _, err := m.hist.Get(name, 0); err == nil {
		man.Generation, man.Previous = prev.Generation+1, mustID(t, prev)
	}
	record(t, m, key, man)
	return man
}

// record signs man with key and records it in m's history.
func record(t testing.TB, m *machine, key manifest.SecretKey, man *manifest.Manifest) {
	t.Helper()
	if err := man.Sign(key); err != nil {
		t.Fatal(err)
	}
	b, err := man.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.hist.Add(b); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB, name string) manifest.SecretKey {
	t.Helper()
	k, err := manifest.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// addTree adds the tree described by files (see writeTree) to s as an
// input-addressed path named name with the given references, signed by
// sign unless it is the zero key.
func addTree(t testing.TB, s *store.Store, name string, files map[string]string, refs []nix.Path, sign manifest.SecretKey) *nix.PathInfo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "t")
	writeTree(t, dir, files)
	var nar bytes.Buffer
	if _, err := nix.DumpNAR(&nar, dir); err != nil {
		t.Fatal(err)
	}
	p, err := nix.MakePath(s.StoreDir(), "output:out", nix.Hash(sha256.Sum256([]byte(name+fmt.Sprint(files)))), name)
	if err != nil {
		t.Fatal(err)
	}
	info := &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len()), References: refs}
	if sign.Key != nil {
		info.Sigs = []string{sign.Sign(info.Fingerprint(s.StoreDir()))}
	}
	pi, err := s.AddNAR(context.Background(), info, &nar)
	if err != nil {
		t.Fatal(err)
	}
	return pi
}

// writeTree creates files under dir: a content starting with "->" makes a
// symlink, "x:" an executable file.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(content[2:], p)
		case strings.HasPrefix(content, "x:"):
			err = os.WriteFile(p, []byte(content[2:]), 0o755)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func randomText(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// fixture is a configuration's closure on machine A: two same-sized
// leaves, a library referring to both, and a root with an activation
// script referring to the library (and to itself).
type fixture struct {
	leafA, leafB, lib, root *nix.PathInfo
	all                     []*nix.PathInfo // references first
}

func buildFixture(t testing.TB, s *store.Store, sign manifest.SecretKey) *fixture {
	t.Helper()
	f := &fixture{}
	f.leafA = addTree(t, s, "leaf-a", map[string]string{"data": randomText(1, 3000)}, nil, sign)
	f.leafB = addTree(t, s, "leaf-b", map[string]string{"data": randomText(2, 3000)}, nil, sign)
	f.lib = addTree(t, s, "lib", map[string]string{
		"lib/big":  randomText(3, 200_000),
		"deps":     f.leafA.Path.Abs(s.StoreDir()) + "\n" + f.leafB.Path.Abs(s.StoreDir()),
		"lib/link": "->big",
	}, []nix.Path{f.leafA.Path, f.leafB.Path}, sign)
	f.root = addTree(t, s, "system", map[string]string{
		"bin/activate": "x:#!/bin/sh\necho \"activated generation $TROVE_GENERATION\"\n",
		"lib":          "->" + f.lib.Path.Abs(s.StoreDir()),
	}, []nix.Path{f.lib.Path}, sign)
	f.all = []*nix.PathInfo{f.leafA, f.leafB, f.lib, f.root}
	return f
}

func createBundle(t testing.TB, m *machine, refs ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Create(context.Background(), &b, m.store, m.hist, refs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// requireSame checks that every path of want is valid in s with the same
// narHash, size and references.
func requireSame(t testing.TB, s *store.Store, want []*nix.PathInfo) {
	t.Helper()
	for _, w := range want {
		got, err := s.Lookup(w.Path)
		if err != nil {
			t.Fatalf("%s: %v", w.Path, err)
		}
		if got.NarHash != w.NarHash || got.NarSize != w.NarSize || fmt.Sprint(got.References) != fmt.Sprint(w.References) {
			t.Fatalf("%s: got %s %d %v, want %s %d %v", w.Path, got.NarHash, got.NarSize, got.References, w.NarHash, w.NarSize, w.References)
		}
	}
}

// requireSound checks the store's invariant: every valid path has the
// content its narHash says and valid references, and every valid path that
// the fixture knows has the fixture's narHash (nothing swapped got in).
func requireSound(t testing.TB, s *store.Store, known []*nix.PathInfo) int {
	t.Helper()
	var problems []string
	n, err := s.Verify(context.Background(), nil, func(p store.Problem) { problems = append(problems, p.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("store.Verify: %v", problems)
	}
	for _, k := range known {
		if got, err := s.Lookup(k.Path); err == nil && got.NarHash != k.NarHash {
			t.Fatalf("%s became valid with narHash %s, want %s", k.Path, got.NarHash, k.NarHash)
		}
	}
	return n
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	a := newMachine(t)
	key := newKey(t, "laptop-1")
	f := buildFixture(t, a.store, key)
	m := publish(t, a, key, "laptop", f.root.Path, "bin/activate")
	ca, err := a.store.AddTree(ctx, writeFile(t, "notes.txt", "content-addressed\n"), "notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	unsigned := addTree(t, a.store, "unsigned", map[string]string{"x": "y"}, []nix.Path{ca.Path}, manifest.SecretKey{})

	for _, tc := range []struct {
		name      string
		refs      []string
		trust     func(kr *manifest.Keyring) // on the importing machine
		opts      ImportOptions
		want      []*nix.PathInfo
		manifests []string
	}{
		{name: "configuration", refs: []string{"laptop"},
			trust: func(kr *manifest.Keyring) { kr.Add(key.Public(), "laptop") },
			want:  f.all, manifests: []string{"laptop@1"}},
		{name: "configuration generation", refs: []string{"laptop@1"},
			trust: func(kr *manifest.Keyring) { kr.Add(key.Public(), "*") },
			want:  f.all, manifests: []string{"laptop@1"}},
		{name: "signed store path", refs: []string{f.lib.Path.Abs(a.store.StoreDir())},
			trust: func(kr *manifest.Keyring) { kr.Add(key.Public()) },
			want:  []*nix.PathInfo{f.leafA, f.leafB, f.lib}},
		{name: "bare store path, content-addressed", refs: []string{ca.Path.String()},
			trust: func(*manifest.Keyring) {}, want: []*nix.PathInfo{ca}},
		{name: "unsigned path with --no-check-sigs", refs: []string{unsigned.Path.String()},
			trust: func(*manifest.Keyring) {}, opts: ImportOptions{NoCheckSigs: true},
			want: []*nix.PathInfo{ca, unsigned}},
		{name: "configuration and a path", refs: []string{"laptop", ca.Path.String(), "laptop@1"},
			trust: func(kr *manifest.Keyring) { kr.Add(key.Public(), "laptop") },
			want:  append([]*nix.PathInfo{ca}, f.all...), manifests: []string{"laptop@1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			crep, err := Create(ctx, &buf, a.store, a.hist, tc.refs)
			if err != nil {
				t.Fatal(err)
			}
			if crep.Paths != len(tc.want) {
				t.Fatalf("bundled %d paths, want %d", crep.Paths, len(tc.want))
			}
			b := newMachine(t)
			tc.trust(b.keys)
			rep, err := Import(ctx, bytes.NewReader(buf.Bytes()), b.store, b.keys, b.hist, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var bytesWant uint64
			for _, pi := range tc.want {
				bytesWant += pi.NarSize
			}
			if rep.PathsAdded != len(tc.want) || rep.BytesAdded != bytesWant || rep.PathsSkipped != 0 {
				t.Fatalf("report %+v, want %d paths and %d bytes added", rep, len(tc.want), bytesWant)
			}
			requireSame(t, b.store, tc.want)
			if n := requireSound(t, b.store, tc.want); n != len(tc.want) {
				t.Fatalf("%d paths valid, want %d", n, len(tc.want))
			}
			var got []string
			for _, mr := range rep.Manifests {
				if !mr.New {
					t.Errorf("manifest %s@%d not new", mr.Name, mr.Generation)
				}
				got = append(got, fmt.Sprintf("%s@%d", mr.Name, mr.Generation))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.manifests) && len(got)+len(tc.manifests) > 0 {
				t.Fatalf("manifests recorded %v, want %v", got, tc.manifests)
			}
			for _, ref := range tc.manifests {
				name, gen, _ := manifest.ParseRef(ref)
				if hm, _, err := b.hist.Get(name, gen); err != nil {
					t.Fatal(err)
				} else if id1, _ := hm.ID(); id1 != mustID(t, m) {
					t.Fatalf("history holds another manifest")
				}
			}

			// Again: nothing new, and nothing past the head is read.
			again, err := Import(ctx, bytes.NewReader(buf.Bytes()[:len(buf.Bytes())-len(trailer)]), b.store, b.keys, b.hist, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !again.NothingNew || again.PathsAdded != 0 || again.PathsSkipped != len(tc.want) {
				t.Fatalf("second import: %+v", again)
			}
		})
	}
}

func mustID(t testing.TB, m *manifest.Manifest) manifest.ID {
	id, err := m.ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func writeFile(t testing.TB, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Two generations in one bundle, newest first on the command line: both
// are recorded, oldest first, so neither is stale.
func TestTwoGenerations(t *testing.T) {
	a := newMachine(t)
	key := newKey(t, "laptop-1")
	f := buildFixture(t, a.store, manifest.SecretKey{})
	publish(t, a, key, "laptop", f.lib.Path, "")
	gen2 := publish(t, a, key, "laptop", f.root.Path, "bin/activate")
	b := newMachine(t)
	b.keys.Add(key.Public(), "laptop")
	rep, err := Import(context.Background(), bytes.NewReader(createBundle(t, a, "laptop", "laptop@1")), b.store, b.keys, b.hist, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PathsAdded != 4 || len(rep.Manifests) != 2 || !rep.Manifests[0].New || !rep.Manifests[1].New {
		t.Fatalf("report %+v", rep)
	}
	m, _, err := b.hist.Get("laptop", 0)
	if err != nil || mustID(t, m) != mustID(t, gen2) {
		t.Fatalf("newest here: %v %v", m, err)
	}
	requireSame(t, b.store, f.all)
}

func TestCreateRefusals(t *testing.T) {
	a := newMachine(t)
	key := newKey(t, "k")
	f := buildFixture(t, a.store, key)
	missing, _ := nix.MakePath(a.store.StoreDir(), "output:out", nix.Hash{1}, "gone")
	for _, tc := range []struct {
		name string
		refs []string
		want string
	}{
		{"nothing", nil, "nothing to bundle"},
		{"unknown configuration", []string{"desktop"}, "no such configuration"},
		{"bad ref", []string{"./result/../x"}, "neither a store path nor"},
		{"missing path", []string{missing.Abs(a.store.StoreDir())}, "not valid"},
		{"path outside the store dir", []string{"/gnu/store/" + f.root.Path.String()}, "neither a store path nor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			_, err := Create(context.Background(), &b, a.store, a.hist, tc.refs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCreateReportsUnvouched(t *testing.T) {
	a := newMachine(t)
	f := buildFixture(t, a.store, manifest.SecretKey{})
	var b bytes.Buffer
	rep, err := Create(context.Background(), &b, a.store, a.hist, []string{f.lib.Path.String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unvouched) != 3 {
		t.Fatalf("unvouched %v, want the 3 unsigned paths", rep.Unvouched)
	}
	_, err = Import(context.Background(), bytes.NewReader(b.Bytes()), newMachine(t).store, nil, nil, ImportOptions{})
	if !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("import of unsigned paths: %v, want ErrUntrusted", err)
	}
}

// A seekable input is skipped over rather than read for paths already here.
func TestImportSkipsValidPaths(t *testing.T) {
	ctx := context.Background()
	a := newMachine(t)
	key := newKey(t, "k")
	f := buildFixture(t, a.store, key)
	bundle := createBundle(t, a, f.root.Path.String())
	b := newMachine(t)
	b.keys.Add(key.Public())
	// B already has the library's closure.
	if _, err := Import(ctx, bytes.NewReader(createBundle(t, a, f.lib.Path.String())), b.store, b.keys, b.hist, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Import(ctx, bytes.NewReader(bundle), b.store, b.keys, b.hist, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PathsAdded != 1 || rep.PathsSkipped != 3 || rep.BytesAdded != f.root.NarSize {
		t.Fatalf("report %+v", rep)
	}
	requireSame(t, b.store, f.all)
	// Through a pipe (not seekable) too.
	c := newMachine(t)
	c.keys.Add(key.Public())
	Import(ctx, bytes.NewReader(createBundle(t, a, f.leafA.Path.String())), c.store, c.keys, c.hist, ImportOptions{})
	rep, err = Import(ctx, onlyReader{bytes.NewReader(bundle)}, c.store, c.keys, c.hist, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PathsAdded != 3 || rep.PathsSkipped != 1 {
		t.Fatalf("report %+v", rep)
	}
	requireSame(t, c.store, f.all)
}

// A NAR bigger than the read buffer is seeked over (or read through, from
// a pipe) when its path is already valid, and the next frame still lines up.
func TestImportSkipsBigNAR(t *testing.T) {
	ctx := context.Background()
	a := newMachine(t)
	key := newKey(t, "k")
	big := addTree(t, a.store, "big", map[string]string{"data": randomText(9, 3<<20)}, nil, key)
	top := addTree(t, a.store, "top", map[string]string{"ref": big.Path.Abs(a.store.StoreDir())}, []nix.Path{big.Path}, key)
	bundle := createBundle(t, a, top.Path.String())
	file := filepath.Join(t.TempDir(), "b.trove")
	if err := os.WriteFile(file, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   func() io.Reader
	}{
		{"file", func() io.Reader {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
		{"pipe", func() io.Reader { return onlyReader{bytes.NewReader(bundle)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMachine(t)
			b.keys.Add(key.Public())
			if _, err := Import(ctx, bytes.NewReader(createBundle(t, a, big.Path.String())), b.store, b.keys, b.hist, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			rep, err := Import(ctx, tc.in(), b.store, b.keys, b.hist, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.PathsAdded != 1 || rep.PathsSkipped != 1 || rep.BytesSkipped != big.NarSize {
				t.Fatalf("report %+v", rep)
			}
			requireSame(t, b.store, []*nix.PathInfo{big, top})
			requireSound(t, b.store, nil)
		})
	}
	// A truncated file whose missing tail is a skipped NAR still fails.
	b := newMachine(t)
	b.keys.Add(key.Public())
	Import(ctx, bytes.NewReader(createBundle(t, a, big.Path.String())), b.store, b.keys, b.hist, ImportOptions{})
	cut := filepath.Join(t.TempDir(), "cut.trove")
	os.WriteFile(cut, bundle[:len(bundle)-int(top.NarSize)-100], 0o644)
	f, _ := os.Open(cut)
	defer f.Close()
	if _, err := Import(ctx, f, b.store, b.keys, b.hist, ImportOptions{}); !errors.Is(err, ErrBadBundle) {
		t.Fatalf("truncated: %v", err)
	}
}

// onlyReader hides Seek.
type onlyReader struct{ r *bytes.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// TestCreateVouchesByManifest: the paths a bundled manifest lists need no
// signature, the others do; and a manifest whose infos differ from the
// store's is refused before anything is written.
func TestCreateVouchesByManifest(t *testing.T) {
	a := newMachine(t)
	key := newKey(t, "laptop-1")
	f := buildFixture(t, a.store, manifest.SecretKey{})
	publish(t, a, key, "laptop", f.lib.Path, "")
	var b bytes.Buffer
	rep, err := Create(context.Background(), &b, a.store, a.hist, []string{"laptop", f.root.Path.String()})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{f.root.Path.Abs(a.store.StoreDir())}; !slices.Equal(rep.Unvouched, want) {
		t.Fatalf("unvouched %v, want only the unlisted %v", rep.Unvouched, want)
	}

	closure, err := a.store.Closure(f.lib.Path)
	if err != nil {
		t.Fatal(err)
	}
	for i, pi := range closure {
		if pi.Path == f.lib.Path {
			altered := *pi
			altered.NarSize++
			closure[i] = &altered
		}
	}
	record(t, a, key, &manifest.Manifest{Name: "other", Generation: 1, Root: f.lib.Path, Created: time.Now(), Paths: closure})
	_, err = Create(context.Background(), &b, a.store, a.hist, []string{"other"})
	if err == nil || !strings.Contains(err.Error(), "differs from what the manifest signed") || !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("bundling a manifest the store disagrees with: %v", err)
	}
}
