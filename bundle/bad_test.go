package bundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// badFixture is a published configuration on A and its bundle.
type badFixture struct {
	a      *machine
	key    manifest.SecretKey
	f      *fixture
	bundle []byte
	hd     *head // the bundle's, parsed
	head   int   // bytes before the first NAR
}

func newBadFixture(t testing.TB) *badFixture {
	t.Helper()
	bf := &badFixture{a: newMachine(t), key: newKey(t, "laptop-1")}
	bf.f = buildFixture(t, bf.a.store, manifest.SecretKey{}) // unsigned: only the manifest vouches
	publish(t, bf.a, bf.key, "laptop", bf.f.root.Path, "bin/activate")
	bf.bundle = createBundle(t, bf.a, "laptop")
	bf.hd = readHeadOf(t, bf.bundle)
	head, err := encodeHead(bf.hd.storeDir, bf.hd.manifests, bf.hd.infos)
	if err != nil {
		t.Fatal(err)
	}
	bf.head = len(head)
	return bf
}

// readHeadOf parses the head of bundle b.
func readHeadOf(t testing.TB, b []byte) *head {
	t.Helper()
	hd, err := newReader(bytes.NewReader(b)).readHead()
	if err != nil {
		t.Fatal(err)
	}
	return hd
}

// importer is a machine that trusts the key for the configuration, reset
// between attempts: an empty store and an empty history.
type importer struct {
	*machine
	t testing.TB
}

func (bf *badFixture) importer(t testing.TB) *importer {
	b := newMachine(t)
	if err := b.keys.Add(bf.key.Public(), "laptop"); err != nil {
		t.Fatal(err)
	}
	return &importer{b, t}
}

func (im *importer) reset() {
	if _, err := im.store.GC(context.Background(), false); err != nil {
		im.t.Fatal(err)
	}
	im.hist = manifest.OpenHistory(im.t.TempDir(), im.keys)
}

func (im *importer) imp(b []byte) (*Report, error) {
	return Import(context.Background(), bytes.NewReader(b), im.store, im.keys, im.hist, ImportOptions{})
}

// requireNoManifest checks that a failed import recorded nothing.
func (im *importer) requireNoManifest(t testing.TB) {
	t.Helper()
	if gens, _ := im.hist.Generations("laptop"); len(gens) > 0 {
		t.Fatalf("a failed import recorded generations %v", gens)
	}
}

func (im *importer) validCount(t testing.TB) int {
	t.Helper()
	n, _, err := im.store.StoreSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// offsets picks where to damage a bundle: densely in the head (every
// field), at every frame boundary, and spread over the NARs.
func offsets(bf *badFixture) []int {
	var out []int
	for i := 0; i < bf.head; i += 3 {
		out = append(out, i)
	}
	off := bf.head
	for _, pi := range bf.f.all {
		out = append(out, off, off+7, off+8, off+9, off+8+int(pi.NarSize)/2, off+8+int(pi.NarSize)-1)
		off += 8 + int(pi.NarSize)
	}
	for i := bf.head; i < len(bf.bundle); i += len(bf.bundle) / 40 {
		out = append(out, i)
	}
	for i := len(bf.bundle) - len(trailer) - 1; i < len(bf.bundle); i++ {
		out = append(out, i)
	}
	return out
}

func TestCorruptedBundles(t *testing.T) {
	bf := newBadFixture(t)
	im := bf.importer(t)
	succeeded := 0
	for _, off := range offsets(bf) {
		im.reset()
		b := bytes.Clone(bf.bundle)
		b[off] ^= 0x5a
		_, err := im.imp(b)
		requireSound(t, im.store, bf.f.all)
		if err != nil {
			im.requireNoManifest(t)
			continue
		}
		// Only unsigned bytes (a path's signature list) can change
		// without failing, and then the content is still the signed one.
		succeeded++
		requireSame(t, im.store, bf.f.all)
		if off >= bf.head {
			t.Fatalf("damage at byte %d (after the head) was accepted", off)
		}
	}
	if succeeded > 0 {
		t.Logf("%d damaged bundles imported the right content (damage in unsigned bytes)", succeeded)
	}
}

func TestTruncatedBundles(t *testing.T) {
	bf := newBadFixture(t)
	im := bf.importer(t)
	cuts := offsets(bf)
	for _, cut := range append(cuts, len(bf.bundle)-1) {
		im.reset()
		rep, err := im.imp(bf.bundle[:cut])
		if err == nil {
			t.Fatalf("a bundle cut at byte %d of %d was accepted", cut, len(bf.bundle))
		}
		if cut < bf.head && !errors.Is(err, ErrBadBundle) {
			t.Fatalf("cut at %d: %v, want ErrBadBundle", cut, err)
		}
		// What became valid is complete and verified, each with its closure.
		n := requireSound(t, im.store, bf.f.all)
		if n != rep.PathsAdded {
			t.Fatalf("cut at %d: %d paths valid, report says %d added", cut, n, rep.PathsAdded)
		}
		im.requireNoManifest(t)
	}
	// The whole file, for contrast.
	im.reset()
	if _, err := im.imp(bf.bundle); err != nil {
		t.Fatal(err)
	}
}

// craft builds a bundle from parts, with nars[i] the bytes framed for
// infos[i].
func craft(t testing.TB, storeDir string, manifests [][]byte, infos []*nix.PathInfo, nars [][]byte) []byte {
	t.Helper()
	return craftOf(t, formatVersion, encodeInfo, storeDir, manifests, infos, nars)
}

// craftOf is craft for a bundle of format version whose infos enc encodes.
func craftOf(t testing.TB, version uint64, enc func(*nix.PathInfo) ([]byte, error), storeDir string, manifests [][]byte, infos []*nix.PathInfo, nars [][]byte) []byte {
	t.Helper()
	b, err := encodeHeadOf(version, enc, storeDir, manifests, infos)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nars {
		b = appendBlob(b, n)
	}
	return append(b, trailer...)
}

// narsOf is the NARs of pis, in order.
func narsOf(t testing.TB, s *store.Store, pis ...*nix.PathInfo) [][]byte {
	t.Helper()
	var out [][]byte
	for _, pi := range pis {
		out = append(out, narOf(t, s, pi.Path))
	}
	return out
}

func narOf(t testing.TB, s *store.Store, p nix.Path) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := s.WriteNAR(context.Background(), &b, p, 0, -1); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSwappedNAR(t *testing.T) {
	bf := newBadFixture(t)
	hd, s := bf.hd, bf.a.store
	nars := func(swap func(p nix.Path) nix.Path) [][]byte {
		var out [][]byte
		for _, pi := range hd.infos {
			out = append(out, narOf(t, s, swap(pi.Path)))
		}
		return out
	}
	leafA, leafB, lib := bf.f.leafA.Path, bf.f.leafB.Path, bf.f.lib.Path
	if bf.f.leafA.NarSize != bf.f.leafB.NarSize {
		t.Fatal("the fixture's leaves must have NARs of one size")
	}
	im := bf.importer(t)
	for _, tc := range []struct {
		name    string
		bundle  []byte
		want    error
		invalid []nix.Path // must not become valid
	}{
		{"same-size NAR of another path", craft(t, s.StoreDir(), hd.manifests, hd.infos, nars(func(p nix.Path) nix.Path {
			if p == leafB {
				return leafA
			}
			return p
		})), nix.ErrHashMismatch, []nix.Path{leafB, lib}},
		{"NAR of another size", craft(t, s.StoreDir(), hd.manifests, hd.infos, nars(func(p nix.Path) nix.Path {
			if p == lib {
				return leafA
			}
			return p
		})), ErrBadBundle, []nix.Path{lib}},
		{"info altered to match the swapped NAR", func() []byte {
			infos := make([]*nix.PathInfo, len(hd.infos))
			for i, pi := range hd.infos {
				infos[i] = pi
				if pi.Path == leafB {
					c := *pi
					c.NarHash = bf.f.leafA.NarHash
					infos[i] = &c
				}
			}
			return craft(t, s.StoreDir(), hd.manifests, infos, nars(func(p nix.Path) nix.Path {
				if p == leafB {
					return leafA
				}
				return p
			}))
		}(), trust.ErrUntrusted, []nix.Path{leafA, leafB, lib}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im.reset()
			_, err := im.imp(tc.bundle)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, p := range tc.invalid {
				if ok, _ := im.store.IsValid(p); ok {
					t.Fatalf("%s became valid", p)
				}
			}
			requireSound(t, im.store, bf.f.all)
			im.requireNoManifest(t)
		})
	}
}

func TestUntrustedManifest(t *testing.T) {
	bf := newBadFixture(t)
	other := newKey(t, "laptop-1") // same name, another key
	for _, tc := range []struct {
		name  string
		trust func(kr *manifest.Keyring)
	}{
		{"no trusted keys", func(*manifest.Keyring) {}},
		{"key trusted for another configuration", func(kr *manifest.Keyring) { kr.Add(bf.key.Public(), "desktop") }},
		{"key trusted for store paths only", func(kr *manifest.Keyring) { kr.Add(bf.key.Public()) }},
		{"another key of the same name", func(kr *manifest.Keyring) { kr.Add(other.Public(), "laptop") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMachine(t)
			tc.trust(b.keys)
			_, err := Import(context.Background(), bytes.NewReader(bf.bundle), b.store, b.keys, b.hist, ImportOptions{})
			if !errors.Is(err, manifest.ErrUntrustedPublisher) {
				t.Fatalf("got %v, want ErrUntrustedPublisher", err)
			}
			if n, _, _ := b.store.StoreSize(context.Background()); n != 0 {
				t.Fatalf("%d paths became valid", n)
			}
			if names, _ := b.hist.Names(); len(names) != 0 {
				t.Fatalf("history records %v", names)
			}
			// --no-check-sigs takes the paths but still not the manifest.
			rep, err := Import(context.Background(), bytes.NewReader(bf.bundle), b.store, b.keys, b.hist, ImportOptions{NoCheckSigs: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.PathsAdded != 4 || len(rep.Manifests) != 1 || rep.Manifests[0].Ignored == "" {
				t.Fatalf("report %+v", rep)
			}
			if names, _ := b.hist.Names(); len(names) != 0 {
				t.Fatalf("history records %v", names)
			}
		})
	}
}

func TestStaleManifest(t *testing.T) {
	bf := newBadFixture(t) // generation 1 is in bf.bundle
	publish(t, bf.a, bf.key, "laptop", bf.f.lib.Path, "")
	_, gen2, err := bf.a.hist.Get("laptop", 2)
	if err != nil {
		t.Fatal(err)
	}
	im := bf.importer(t)
	if _, _, err := im.hist.Add(gen2); err != nil { // B already knows generation 2
		t.Fatal(err)
	}
	_, err = im.imp(bf.bundle)
	if !errors.Is(err, manifest.ErrStale) {
		t.Fatalf("got %v, want ErrStale", err)
	}
	if n := im.validCount(t); n != 0 {
		t.Fatalf("%d paths became valid", n)
	}
}

func TestIncompleteBundles(t *testing.T) {
	bf := newBadFixture(t)
	hd, s := bf.hd, bf.a.store
	f := bf.f
	nar := func(pis ...*nix.PathInfo) [][]byte { return narsOf(t, s, pis...) }
	stray := addTree(t, s, "stray", map[string]string{"f": "stray"}, nil, manifest.SecretKey{}) // unsigned, in no manifest
	im := bf.importer(t)
	for _, tc := range []struct {
		name   string
		bundle []byte
		opts   ImportOptions
		want   string
	}{
		{"reference neither in the bundle nor here", craft(t, s.StoreDir(), nil, []*nix.PathInfo{f.leafA, f.lib}, nar(f.leafA, f.lib)),
			ImportOptions{NoCheckSigs: true}, "neither in the bundle nor in this store"},
		{"manifest closure incomplete", craft(t, s.StoreDir(), hd.manifests, []*nix.PathInfo{f.leafA, f.leafB, f.lib}, nar(f.leafA, f.leafB, f.lib)),
			ImportOptions{}, "closure of laptop@1 is incomplete"},
		{"referrer before its reference", craft(t, s.StoreDir(), nil, []*nix.PathInfo{f.lib, f.leafA, f.leafB}, nar(f.lib, f.leafA, f.leafB)),
			ImportOptions{NoCheckSigs: true}, "references must come first"},
		{"a path twice", craft(t, s.StoreDir(), nil, []*nix.PathInfo{f.leafA, f.leafA}, nar(f.leafA, f.leafA)),
			ImportOptions{NoCheckSigs: true}, "listed twice"},
		{"unvouched path beside a manifest", craft(t, s.StoreDir(), hd.manifests, []*nix.PathInfo{f.leafA, f.leafB, f.lib, f.root, stray},
			nar(f.leafA, f.leafB, f.lib, f.root, stray)), ImportOptions{}, "not vouched for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im.reset()
			_, err := Import(context.Background(), bytes.NewReader(tc.bundle), im.store, im.keys, im.hist, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if n := im.validCount(t); n != 0 {
				t.Fatalf("%d paths became valid", n)
			}
			im.requireNoManifest(t)
		})
	}
}

func TestNotABundle(t *testing.T) {
	bf := newBadFixture(t)
	u64 := func(n uint64) []byte { return appendU64(nil, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	start := cat([]byte(magic), u64(1), appendBlob(nil, []byte(nix.DefaultStoreDir)))
	var nixExport bytes.Buffer
	if _, err := CreateNixExport(context.Background(), &nixExport, bf.a.store, bf.a.hist, []string{"laptop"}); err != nil {
		t.Fatal(err)
	}
	gnu := func() []byte {
		s, err := store.Open(t.TempDir(), store.Options{StoreDir: "/gnu/store"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		p := addTree(t, s, "x", map[string]string{"a": "b"}, nil, manifest.SecretKey{})
		var b bytes.Buffer
		if _, err := Create(context.Background(), &b, s, nil, []string{p.Path.String()}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}()
	im := bf.importer(t)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"text", []byte("hello, this is not a bundle at all"), "wrong magic"},
		{"a NAR", narOf(t, bf.a.store, bf.f.leafA.Path), "wrong magic"},
		{"nix-store --export output", nixExport.Bytes(), "wrong magic"},
		{"magic only", []byte(magic), "truncated"},
		{"newer version", cat([]byte(magic), u64(formatVersion+1)), fmt.Sprintf("format version %d", formatVersion+1)},
		{"huge store dir", cat([]byte(magic), u64(1), u64(1<<40)), "at most 4095"},
		{"too many manifests", cat(start, u64(1<<40)), "at most 256"},
		{"huge manifest", cat(start, u64(1), u64(1<<62)), "at most"},
		{"too many infos", cat(start, u64(0), u64(1<<40)), "at most 1048576"},
		{"huge info", cat(start, u64(0), u64(1), u64(1<<50)), "at most 1048576"},
		{"garbage info", cat(start, u64(0), u64(1), appendBlob(nil, []byte("not cbor"))), "path info 0"},
		{"another store dir", gnu, "store dir /gnu/store"},
		{"bytes after the trailer", append(bytes.Clone(bf.bundle), 0), "after the trailer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im.reset()
			_, err := im.imp(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			requireSound(t, im.store, bf.f.all)
			im.requireNoManifest(t)
		})
	}
}
