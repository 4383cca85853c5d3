package manifest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

func testPath(t testing.TB, name string) nix.Path {
	p, err := nix.MakePath(nix.DefaultStoreDir, "output:out", nix.Hash(sha256.Sum256([]byte(name))), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testManifest(t testing.TB, gen uint64) *Manifest {
	leaf, root := testPath(t, "leaf"), testPath(t, "system")
	return &Manifest{
		Name: "laptop", Generation: gen, Root: root, Activate: "bin/activate",
		Created: time.Unix(1_790_000_000, 0),
		Paths: []*nix.PathInfo{
			{Path: root, NarHash: nix.Hash{1}, NarSize: 100, References: []nix.Path{leaf}, ChunkIndex: chunk.ID{2}},
			{Path: leaf, NarHash: nix.Hash{3}, NarSize: 50, ChunkIndex: chunk.ID{4}},
		},
	}
}

func signed(t testing.TB, m *Manifest, k SecretKey) []byte {
	t.Helper()
	if err := m.Sign(k); err != nil {
		t.Fatal(err)
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestManifestRoundTrip(t *testing.T) {
	k, _ := GenerateKey("laptop-1")
	m := testManifest(t, 1)
	b := signed(t, m, k)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "laptop" || got.Generation != 1 || got.Root != m.Root || got.Activate != "bin/activate" ||
		len(got.Paths) != 2 || got.Publisher.String() != k.Public().String() {
		t.Fatalf("decoded %+v", got)
	}
	again, _ := got.Encode()
	if !bytes.Equal(again, b) {
		t.Fatal("re-encoding differs: not canonical")
	}
	id1, _ := m.ID()
	id2, _ := got.ID()
	if id1 != id2 || id1.IsZero() {
		t.Fatal("IDs differ")
	}
	if back, err := ParseID(id1.String()); err != nil || back != id1 {
		t.Fatalf("ParseID(%s) = %v, %v", id1, back, err)
	}
}

// TestTamperedManifestsAreRefused changes each field after signing.
func TestTamperedManifestsAreRefused(t *testing.T) {
	k, _ := GenerateKey("laptop-1")
	other, _ := GenerateKey("laptop-1") // same name, different key
	for _, tc := range []struct {
		name   string
		tamper func(m *Manifest)
	}{
		{"name", func(m *Manifest) { m.Name = "desktop" }},
		{"generation", func(m *Manifest) { m.Generation = 99 }},
		{"root", func(m *Manifest) { m.Root = m.Paths[1].Path }},
		{"activate", func(m *Manifest) { m.Activate = "bin/evil" }},
		{"created", func(m *Manifest) { m.Created = m.Created.Add(time.Hour) }},
		{"previous", func(m *Manifest) { m.Previous = ID{9} }},
		{"narHash", func(m *Manifest) { m.Paths[0].NarHash[0] ^= 1 }},
		{"narSize", func(m *Manifest) { m.Paths[1].NarSize++ }},
		{"chunk index", func(m *Manifest) { m.Paths[1].ChunkIndex[0] ^= 1 }},
		{"references", func(m *Manifest) { m.Paths[0].References = nil }},
		{"publisher", func(m *Manifest) { m.Publisher = other.Public() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest(t, 1)
			signed(t, m, k)
			tc.tamper(m)
			sig := m.Sig
			b, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(b); !errors.Is(err, ErrBadManifest) {
				t.Fatalf("tampered %s (sig %s...) decoded: %v", tc.name, sig[:12], err)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	k, _ := GenerateKey("laptop-1")
	notClosed := testManifest(t, 1)
	notClosed.Paths = notClosed.Paths[:1] // root refers to leaf, not listed
	if err := notClosed.Sign(k); err == nil || !strings.Contains(err.Error(), "not closed") {
		t.Fatalf("signing an open closure: %v", err)
	}
	for _, name := range []string{"", "a/b", "..", ".hidden", "-x", "x y", strings.Repeat("a", 65)} {
		m := testManifest(t, 1)
		m.Name = name
		if err := m.Sign(k); err == nil {
			t.Errorf("signed a manifest named %q", name)
		}
	}
	for _, act := range []string{"/bin/sh", "../x", "a/../../b", "./x"} {
		m := testManifest(t, 1)
		m.Activate = act
		if err := m.Sign(k); err == nil {
			t.Errorf("signed activation %q", act)
		}
	}
	// A health check is a command inside the closure too: a publisher can
	// make a follower run nothing outside it.
	for _, check := range []string{"/bin/sh", "../x", "a/../../b", "./x", "bin/\x00x"} {
		m := testManifest(t, 1)
		m.Check = check
		if err := m.Sign(k); err == nil {
			t.Errorf("signed health check %q", check)
		}
	}
	m := testManifest(t, 1)
	m.Check = "bin/healthy"
	b := signed(t, m, k)
	if got, err := Decode(b); err != nil || got.Check != "bin/healthy" {
		t.Errorf("a manifest with a check decodes to %+v, %v", got, err)
	}
	for _, b := range [][]byte{nil, []byte("garbage"), bytes.Repeat([]byte{0x9f}, 10)} {
		if _, err := Decode(b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("Decode(%q) = %v", b, err)
		}
	}
}

func TestHistoryTrustAndReplay(t *testing.T) {
	home := t.TempDir()
	k, _ := GenerateKey("laptop-1")
	kr, _ := LoadKeyring(filepath.Join(home, "trusted-keys"))
	h := OpenHistory(home, kr)
	g1 := signed(t, testManifest(t, 1), k)
	if _, _, err := h.Add(g1); !errors.Is(err, ErrUntrustedPublisher) {
		t.Fatalf("unknown key: %v", err)
	}
	kr.Add(k.Public()) // trusted for paths only
	if _, _, err := h.Add(g1); !errors.Is(err, ErrUntrustedPublisher) || !strings.Contains(err.Error(), "--config laptop") {
		t.Fatalf("key not trusted for the name: %v", err)
	}
	kr.Add(k.Public(), "laptop")
	if _, isNew, err := h.Add(g1); err != nil || !isNew {
		t.Fatalf("trusted g1: %v %v", isNew, err)
	}
	if _, isNew, err := h.Add(g1); err != nil || isNew {
		t.Fatalf("same manifest again: %v %v", isNew, err)
	}
	g2m := testManifest(t, 2)
	g2 := signed(t, g2m, k)
	if _, _, err := h.Add(g2); err != nil {
		t.Fatal(err)
	}
	// A different generation 1 is refused.
	old := testManifest(t, 1)
	old.Activate = "bin/other"
	if _, _, err := h.Add(signed(t, old, k)); !errors.Is(err, ErrConflict) {
		t.Fatalf("a different generation 1: %v", err)
	}
	m, _, err := h.Get("laptop", 0)
	if err != nil || m.Generation != 2 {
		t.Fatalf("newest = %v, %v", m, err)
	}
	if gens, _ := h.Generations("laptop"); fmt.Sprint(gens) != "[1 2]" {
		t.Fatalf("generations %v", gens)
	}
	if _, _, err := h.Get("laptop", 7); !errors.Is(err, ErrUnknown) {
		t.Fatalf("absent generation: %v", err)
	}
	// An older generation not known yet gets in when asked for (trove
	// sync laptop@3 after generation 4 is known); the newest stays.
	g4 := signed(t, testManifest(t, 4), k)
	g3 := signed(t, testManifest(t, 3), k)
	if _, _, err := h.Add(g4); err != nil {
		t.Fatal(err)
	}
	if _, isNew, err := h.Add(g3); err != nil || !isNew {
		t.Fatalf("older generation 3 after 4: %v %v", isNew, err)
	}
	if m, _, err := h.Get("laptop", 0); err != nil || m.Generation != 4 {
		t.Fatalf("newest after adding generation 3 = %v, %v", m, err)
	}
	if m, _, err := h.Get("laptop", 3); err != nil || m.Generation != 3 {
		t.Fatalf("generation 3 = %v, %v", m, err)
	}
	// The keyring file keeps scopes across a reload.
	again, err := LoadKeyring(filepath.Join(home, "trusted-keys"))
	if err != nil || fmt.Sprint(again.Configs("laptop-1")) != "[laptop]" {
		t.Fatalf("reloaded scopes %v, %v", again.Configs("laptop-1"), err)
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		gen  uint64
		ok   bool
	}{{"laptop", "laptop", 0, true}, {"laptop@3", "laptop", 3, true}, {"laptop@0", "", 0, false}, {"laptop@x", "", 0, false}, {"a/b@1", "", 0, false}} {
		name, gen, err := ParseRef(tc.in)
		if (err == nil) != tc.ok || name != tc.name || gen != tc.gen {
			t.Errorf("ParseRef(%q) = %q %d %v", tc.in, name, gen, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	k, _ := GenerateKey("fuzz-1")
	m := testManifest(f, 1)
	m.Sign(k)
	b, _ := m.Encode()
	f.Add(b)
	f.Add([]byte{0xa2, 0x01, 0x40, 0x02, 0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := m.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted a manifest that does not re-encode to itself")
		}
	})
}

// manifestBomb is a signed-manifest envelope whose body lists paths paths
// of refs empty references each: about paths×refs bytes that decoded to
// 16 bytes per reference (63 MiB of them peaked a victim at 1.21 GB).
func manifestBomb(paths, refs int) []byte {
	head := func(major byte, n int) []byte {
		return []byte{major<<5 | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	one := append([]byte{0xa1, 0x04}, head(4, refs)...)
	one = append(one, bytes.Repeat([]byte{0x60}, refs)...)
	body := append([]byte{0xa1, 0x09}, head(4, paths)...)
	body = append(body, bytes.Repeat(one, paths)...)
	env := append([]byte{0xa2, 0x01}, head(2, len(body))...)
	return append(append(env, body...), 0x02, 0x60)
}

// TestManifestBombRefusedUnbuilt: a manifest within the size cap whose
// body would decode to many times its size is refused having built no
// more than a copy of its body.
func TestManifestBombRefusedUnbuilt(t *testing.T) {
	b := manifestBomb(240, 1<<16)
	if len(b) > MaxManifestSize {
		t.Fatalf("the bomb takes %d bytes, over the cap of %d", len(b), MaxManifestSize)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err := Decode(b)
	runtime.ReadMemStats(&m1)
	if !errors.Is(err, ErrBadManifest) {
		t.Fatalf("accepted, or refused without ErrBadManifest: %v", err)
	}
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("%d bytes: refused after allocating %d bytes", len(b), alloc)
	if alloc > uint64(len(b))+1<<20 {
		t.Fatalf("refusing %d bytes allocated %d bytes", len(b), alloc)
	}
}

// TestLargeClosuresStillDecode: the limits leave room for real closures
// many times a NixOS system's (about 3000 paths and 25,000 references):
// 12,000 paths of 20 references each, and one path referring to 4096.
func TestLargeClosuresStillDecode(t *testing.T) {
	k, _ := GenerateKey("big-1")
	const n = 12_000
	paths := make([]nix.Path, n)
	for i := range paths {
		paths[i] = testPath(t, fmt.Sprintf("pkg-%d", i))
	}
	m := &Manifest{Name: "big", Generation: 1, Root: paths[n-1], Created: time.Unix(1_790_000_000, 0)}
	for i, p := range paths {
		pi := &nix.PathInfo{Path: p, NarHash: nix.Hash{1}, NarSize: 100, ChunkIndex: chunk.ID{2}}
		switch {
		case i == n-1:
			pi.References = slices.Clone(paths[n-1-MaxReferences : n-1])
		case i >= 20:
			pi.References = slices.Clone(paths[i-20 : i])
		}
		slices.SortFunc(pi.References, nix.Path.Compare)
		m.Paths = append(m.Paths, pi)
	}
	b := signed(t, m, k)
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("a manifest of %d paths (%d bytes): %v", n, len(b), err)
	}
	if len(got.Paths) != n {
		t.Fatalf("%d paths back", len(got.Paths))
	}
	t.Logf("%d paths, %d bytes", n, len(b))
}

// TestHistoryAddAnswer: a peer's answer is recorded only if it is what was
// asked for; an older newest (a peer that is behind) is ignored, and every
// new manifest recorded is told to OnNew.
func TestHistoryAddAnswer(t *testing.T) {
	home := t.TempDir()
	k, _ := GenerateKey("laptop-1")
	kr, _ := LoadKeyring(filepath.Join(home, "trusted-keys"))
	kr.Add(k.Public(), "*")
	h := OpenHistory(home, kr)
	var told []uint64
	h.OnNew(func(m *Manifest) { told = append(told, m.Generation) })
	g := map[uint64][]byte{}
	for _, n := range []uint64{1, 2, 3} {
		g[n] = signed(t, testManifest(t, n), k)
	}
	other := testManifest(t, 5)
	other.Name = "desktop"
	for _, tc := range []struct {
		what    string
		b       []byte
		name    string
		gen     uint64
		wantErr error
		wantNew bool
	}{
		{"the newest, asked for", g[2], "laptop", 0, nil, true},
		{"an older one as the newest", g[1], "laptop", 0, nil, false},
		{"another name", signed(t, other, k), "laptop", 0, ErrUnasked, false},
		{"another generation", g[3], "laptop", 1, ErrUnasked, false},
		{"an older one, asked for", g[1], "laptop", 1, nil, true},
	} {
		_, isNew, err := h.AddAnswer(tc.b, tc.name, tc.gen)
		if !errors.Is(err, tc.wantErr) || isNew != tc.wantNew {
			t.Errorf("%s: new %v, err %v; want %v, %v", tc.what, isNew, err, tc.wantNew, tc.wantErr)
		}
	}
	if gens, _ := h.Generations("laptop"); fmt.Sprint(gens) != "[1 2]" {
		t.Fatalf("generations recorded: %v", gens)
	}
	if names, _ := h.Names(); fmt.Sprint(names) != "[laptop]" {
		t.Fatalf("names recorded: %v", names)
	}
	if fmt.Sprint(told) != "[2 1]" {
		t.Fatalf("OnNew was told %v", told)
	}
}

// TestManifestsSignedBeforeStillVerify: testdata/signed-before-cborinfo.cbor
// was signed by trove before manifests encoded their paths with
// nix.CBORInfo (with a deriver, a CA, a self-reference and a previous ID).
// It must still decode and verify, and re-encode to the same bytes: the
// signature covers them.
func TestManifestsSignedBeforeStillVerify(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "signed-before-cborinfo.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Paths) != 3 || m.Paths[1].CA == "" && m.Paths[2].CA == "" || m.Generation != 7 {
		t.Fatalf("decoded %+v", m)
	}
	again, err := m.Encode()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoded to other bytes (%v)", err)
	}
}
