package nix

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/trove-p2p/trove/nixtest"
)

// ---------------------------------------------------------------------------
// An encoder independent of nar.go, for expected bytes and for hostile input.

// tnode describes a NAR node, or a tree to write to disk. Entries keep the
// order given, so unsorted and duplicate entries can be encoded.
type tnode struct {
	typ     string // "regular", "symlink", "directory"; anything else only encodes
	exec    bool
	data    string // file contents or symlink target
	entries []tentry
	mode    os.FileMode // on disk; 0 means 0644, or 0755 when exec
}

type tentry struct {
	name string
	node *tnode
}

func tnFile(data string) *tnode   { return &tnode{typ: "regular", data: data} }
func tnExec(data string) *tnode   { return &tnode{typ: "regular", exec: true, data: data} }
func tnLink(target string) *tnode { return &tnode{typ: "symlink", data: target} }

// tnDir takes name, node, name, node, ...
func tnDir(kv ...any) *tnode {
	n := &tnode{typ: "directory"}
	for i := 0; i < len(kv); i += 2 {
		n.entries = append(n.entries, tentry{kv[i].(string), kv[i+1].(*tnode)})
	}
	return n
}

// Raw pieces for narTok.
type (
	u64tok uint64 // a bare little-endian u64
	rawtok []byte // bytes as they are
	padtok string // a string token whose padding is 0xff instead of zero
)

// narTok encodes tokens: a string as a NAR string, the other types as above.
func narTok(toks ...any) []byte {
	var b []byte
	for _, t := range toks {
		switch t := t.(type) {
		case string:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(t)))
			b = append(b, t...)
			b = append(b, make([]byte, (8-len(t)%8)%8)...)
		case padtok:
			if len(t)%8 == 0 {
				panic("padtok of a length with no padding")
			}
			b = binary.LittleEndian.AppendUint64(b, uint64(len(t)))
			b = append(b, t...)
			b = append(b, bytes.Repeat([]byte{0xff}, (8-len(t)%8)%8)...)
		case u64tok:
			b = binary.LittleEndian.AppendUint64(b, uint64(t))
		case rawtok:
			b = append(b, t...)
		case []byte:
			b = append(b, t...)
		default:
			panic(fmt.Sprintf("narTok: %T", t))
		}
	}
	return b
}

func (n *tnode) encode(b []byte) []byte {
	b = append(b, narTok("(", "type", n.typ)...)
	switch n.typ {
	case "regular":
		if n.exec {
			b = append(b, narTok("executable", "")...)
		}
		b = append(b, narTok("contents", n.data)...)
	case "symlink":
		b = append(b, narTok("target", n.data)...)
	case "directory":
		for _, e := range n.entries {
			b = append(b, narTok("entry", "(", "name", e.name, "node")...)
			b = e.node.encode(b)
			b = append(b, narTok(")")...)
		}
	}
	return append(b, narTok(")")...)
}

// tnNAR is the NAR of n, entries in the order given.
func tnNAR(n *tnode) []byte { return n.encode(narTok("nix-archive-1")) }

// sorted returns n with directory entries in bytewise order, recursively.
func (n *tnode) sorted() *tnode {
	c := *n
	c.entries = slices.Clone(n.entries)
	for i := range c.entries {
		c.entries[i].node = c.entries[i].node.sorted()
	}
	slices.SortFunc(c.entries, func(a, b tentry) int { return strings.Compare(a.name, b.name) })
	return &c
}

// tnWrite creates n at path, which must not exist.
func tnWrite(t testing.TB, path string, n *tnode) {
	t.Helper()
	switch n.typ {
	case "regular":
		mode := n.mode
		if mode == 0 {
			mode = 0o644
			if n.exec {
				mode = 0o755
			}
		}
		if err := os.WriteFile(path, []byte(n.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
	case "symlink":
		if err := os.Symlink(n.data, path); err != nil {
			t.Fatal(err)
		}
	case "directory":
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range n.entries {
			tnWrite(t, filepath.Join(path, e.name), e.node)
		}
	default:
		t.Fatalf("tnWrite: cannot create a %q", n.typ)
	}
}

// memTree is a NARVisitor that rebuilds the tree in memory and checks the
// reader's promises: root first, every node once, parents are directories
// seen before their children, contents exactly as long as announced.
type memTree struct {
	root   *tnode
	nodes  map[string]*tnode
	broken []string // broken promises; any is a reader bug
}

var _ NARVisitor = (*memTree)(nil)

var errBrokenPromise = errors.New("reader broke a visitor promise")

func (m *memTree) fail(format string, a ...any) error {
	m.broken = append(m.broken, fmt.Sprintf(format, a...))
	return errBrokenPromise
}

func (m *memTree) add(rel string, n *tnode) error {
	if m.nodes == nil {
		m.nodes = map[string]*tnode{}
	}
	if _, dup := m.nodes[rel]; dup {
		return m.fail("node %q visited twice", rel)
	}
	if rel == "" {
		m.root = n
	} else {
		if m.root == nil {
			return m.fail("node %q visited before the root", rel)
		}
		parent, name := "", rel
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			parent, name = rel[:i], rel[i+1:]
		}
		p := m.nodes[parent]
		if p == nil || p.typ != "directory" {
			return m.fail("node %q has no directory parent", rel)
		}
		if checkEntryName(name) != nil || len(name) > 255 {
			return m.fail("node %q has a bad name", rel)
		}
		p.entries = append(p.entries, tentry{name, n})
	}
	m.nodes[rel] = n
	return nil
}

func (m *memTree) Directory(rel string) error {
	return m.add(rel, &tnode{typ: "directory"})
}

func (m *memTree) Regular(rel string, executable bool, size int64, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != size {
		return m.fail("file %q: read %d bytes, announced %d", rel, len(data), size)
	}
	return m.add(rel, &tnode{typ: "regular", exec: executable, data: string(data)})
}

func (m *memTree) Symlink(rel, target string) error {
	return m.add(rel, &tnode{typ: "symlink", data: target})
}

// reencode is the canonical NAR of what was visited.
func (m *memTree) reencode() []byte { return tnNAR(m.root.sorted()) }

// dumpBytes is DumpNAR into memory; it checks the returned size.
func dumpBytes(t testing.TB, path string) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := DumpNAR(&buf, path)
	if err != nil {
		t.Fatalf("DumpNAR(%s): %v", path, err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("DumpNAR(%s) returned size %d but wrote %d bytes", path, n, buf.Len())
	}
	return buf.Bytes()
}

// requireSameNAR fails with the first differing offset.
func requireSameNAR(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-16)
	t.Fatalf("%s: NARs differ at byte %d (got %d bytes, want %d)\n got  %q\n want %q",
		what, i, len(got), len(want), got[lo:min(len(got), i+32)], want[lo:min(len(want), i+32)])
}

func tnRandom(seed uint64, n int) string {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return string(b)
}

// ---------------------------------------------------------------------------
// Test vectors of reference/nix.md.

// tdirTree is the tree `tdir` of the vectors.
func tdirTree() *tnode {
	return tnDir(
		"a", tnFile("a"),
		"B", tnFile("B"),
		"run.sh", tnExec("#!/bin/sh\necho hi\n"),
		"link", tnLink("run.sh"),
		"sub", tnDir("empty", tnFile("")),
	)
}

func mustHex(t testing.TB, s string) Hash {
	t.Helper()
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		t.Fatalf("bad hex digest %q in test", s)
	}
	copy(h[:], b)
	return h
}

func TestNARVectors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tree     *tnode
		size     int
		sha256   string
		nix32    string // narHash as Nix prints it, when the vector gives it
		basePath string // `nix-store --add` of the tree under this name
	}{
		{
			name: "hello.txt", tree: tnFile("hello\n"), size: 120,
			sha256:   "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13",
			nix32:    "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
			basePath: "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt",
		},
		{
			name: "tdir", tree: tdirTree(), size: 1264,
			sha256:   "c9de2d45eda92e409419a1b4254219e7c918743054a923c5a094199fb8fd3321",
			basePath: "gb1vj5nysdf2qkllb1kb63q5dyjlg92j-tdir",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), tc.name)
			tnWrite(t, src, tc.tree)
			nar := dumpBytes(t, src)
			if len(nar) != tc.size {
				t.Errorf("NAR size %d, want %d", len(nar), tc.size)
			}
			sum := sha256.Sum256(nar)
			if got := hex.EncodeToString(sum[:]); got != tc.sha256 {
				t.Errorf("NAR sha256 %s, want %s", got, tc.sha256)
			}
			h := Hash(sum)
			if tc.nix32 != "" && h.String() != tc.nix32 {
				t.Errorf("narHash %s, want %s", h, tc.nix32)
			}
			requireSameNAR(t, "DumpNAR vs the test encoder", nar, tnNAR(tc.tree.sorted()))
			if hp, size, err := HashPath(src); err != nil || hp != h || size != int64(tc.size) {
				t.Errorf("HashPath = %v, %d, %v; want %v, %d", hp, size, err, h, tc.size)
			}
			p, err := MakeSourcePath(DefaultStoreDir, h, tc.name, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tc.basePath || p.Abs(DefaultStoreDir) != "/nix/store/"+tc.basePath {
				t.Errorf("MakeSourcePath = %s, want %s", p.Abs(DefaultStoreDir), tc.basePath)
			}
			var m memTree
			if n, err := ReadNAR(bytes.NewReader(nar), &m); err != nil || n != int64(len(nar)) {
				t.Fatalf("ReadNAR of the vector = %d, %v", n, err)
			}
			requireSameNAR(t, "ReadNAR re-encoded", m.reencode(), nar)
		})
	}
}

func TestStorePathVectors(t *testing.T) {
	helloSHA := sha256.Sum256([]byte("hello\n"))
	if hex.EncodeToString(helloSHA[:]) != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" {
		t.Fatal("sha256 of hello\\n is not the vector's flat hash")
	}
	greeting := Path{Name: "greeting"}
	var err error
	if greeting.Hash, err = ParsePathHash("ybf7by4xvcgjhwilsg87rqz9di79bify"); err != nil {
		t.Fatal(err)
	}
	refContent := sha256.Sum256([]byte("see /nix/store/ybf7by4xvcgjhwilsg87rqz9di79bify-greeting\n"))
	for _, tc := range []struct {
		name string
		make func() (Path, error)
		want string
	}{
		{"source hello.txt", func() (Path, error) {
			return MakeSourcePath(DefaultStoreDir, mustHex(t, "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"), "hello.txt", nil, false)
		}, "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"},
		{"fixed recursive = source", func() (Path, error) {
			return MakeFixedOutputPath(DefaultStoreDir, mustHex(t, "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"), true, "hello.txt", nil, false)
		}, "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"},
		{"fixed flat hello.txt", func() (Path, error) {
			return MakeFixedOutputPath(DefaultStoreDir, Hash(helloSHA), false, "hello.txt", nil, false)
		}, "/nix/store/gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt"},
		{"fixed flat via output:out inner", func() (Path, error) {
			return MakePath(DefaultStoreDir, "output:out", mustHex(t, "bc101cf2ad0f504c5dd74b9cce0a732e7157bfbddd2afec191aa0eecd3e252a9"), "hello.txt")
		}, "/nix/store/gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt"},
		{"toFile greeting", func() (Path, error) {
			return MakeTextPath(DefaultStoreDir, Hash(helloSHA), "greeting", nil)
		}, "/nix/store/ybf7by4xvcgjhwilsg87rqz9di79bify-greeting"},
		{"toFile ref with a reference", func() (Path, error) {
			if got := hex.EncodeToString(refContent[:]); got != "0abc6c6d17274af9bb9a70b44f4517d07ee7c2788124b4d713efca2ed6a5f314" {
				return Path{}, fmt.Errorf("content hash %s is not the vector's", got)
			}
			return MakeTextPath(DefaultStoreDir, Hash(refContent), "ref", []Path{greeting})
		}, "/nix/store/iwqyxqbz1qafp5nbagyx9dr52phmpawq-ref"},
		{"derivation output p2p-leaf", func() (Path, error) {
			return MakePath(DefaultStoreDir, "output:out", mustHex(t, "4e2aeecd6bc0947f31432efd1a01475b5144547a47f40a9266a2f7939d0347c4"), "p2p-leaf")
		}, "/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf"},
		{"p2p-leaf.drv", func() (Path, error) {
			return MakeTextPath(DefaultStoreDir, mustHex(t, "7b27ce8a1222b2e7abd0acd7e5425aa26cb1acbd8a297d861ebdac6642a7521f"), "p2p-leaf.drv", nil)
		}, "/nix/store/8d0jp2hk4pfnv2rvhvihm6p675yiwish-p2p-leaf.drv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.make()
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Abs(DefaultStoreDir); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			q, err := ParsePath(DefaultStoreDir, tc.want)
			if err != nil || q != p {
				t.Errorf("ParsePath(%s) = %v, %v; want %v", tc.want, q, err, p)
			}
		})
	}
}

func TestMakePathReferences(t *testing.T) {
	a, _ := ParseBase("hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf")
	b, _ := ParseBase("f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid")
	if got, want := typeWithRefs(DefaultStoreDir, "source", []Path{a, b}, true),
		"source:/nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid:/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf:self"; got != want {
		t.Errorf("typeWithRefs = %q, want %q", got, want)
	}
	if got := typeWithRefs("/s", "text", nil, false); got != "text" {
		t.Errorf("typeWithRefs without refs = %q", got)
	}
	var h Hash
	h[0] = 1
	p1, _ := MakeSourcePath(DefaultStoreDir, h, "x", []Path{a, b}, false)
	p2, _ := MakeSourcePath(DefaultStoreDir, h, "x", []Path{b, a}, false)
	p3, _ := MakeSourcePath(DefaultStoreDir, h, "x", []Path{a, b}, true)
	p4, _ := MakeSourcePath("/other/store", h, "x", []Path{a, b}, false)
	p5, _ := MakeTextPath(DefaultStoreDir, h, "x", []Path{a, b})
	if p1 != p2 {
		t.Errorf("reference order changed the path: %s vs %s", p1, p2)
	}
	for _, p := range []Path{p3, p4, p5} {
		if p == p1 {
			t.Errorf("self, store dir or type did not change the path %s", p1)
		}
	}
	if _, err := MakePath(DefaultStoreDir, "source", h, "bad name"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("MakePath with a bad name: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Interop with the real nix-store.

type corpusCase struct {
	name  string // a valid store path name: the tree is added under it
	build func(t testing.TB, path string)
}

func fromTree(n *tnode) func(testing.TB, string) {
	return func(t testing.TB, path string) { tnWrite(t, path, n) }
}

// interopCorpus is trees built to trip a NAR encoder.
func interopCorpus() []corpusCase {
	sortTrap := tnDir()
	for _, name := range []string{
		"a", "B", "a.b", "a-b", "a0", "é", "e", "Z", "z", "_", "~", "A", "aa", "a~", "a b",
		"with space", "new\nline", "tab\there", "-dash", ".hidden", "..dots", "\x01ctl",
		"\xff\xfe", "日本", "ü", "u\u0308", "a\\b", "quote\"", "*", "#", "[x]",
	} {
		sortTrap.entries = append(sortTrap.entries, tentry{name, tnFile(name + "\n")})
	}
	sortTrap.entries = append(sortTrap.entries,
		tentry{"b-dir", tnDir("z", tnFile(""), "Y", tnFile(""))},
		tentry{"b", tnFile("b")}, // "b" < "b-dir"
		tentry{"b.", tnDir()},
	)

	padding := tnDir()
	for n := 0; n <= 17; n++ {
		padding.entries = append(padding.entries, tentry{fmt.Sprintf("size%02d", n), tnFile(strings.Repeat("x", n))})
	}
	padding.entries = append(padding.entries,
		tentry{strings.Repeat("n", 8), tnFile("")}, tentry{strings.Repeat("n", 9), tnFile("")},
		tentry{strings.Repeat("N", 255), tnFile("longest name")})

	return []corpusCase{
		{"empty-file", fromTree(tnFile(""))},
		{"empty-dir", fromTree(tnDir())},
		{"exec-file", fromTree(tnExec("#!/bin/sh\necho hi\n"))},
		{"empty-exec", fromTree(tnExec(""))},
		{"single-file", fromTree(tnFile(tnRandom(1, 1001)))},
		{"root-symlink", fromTree(tnLink("some/where/else"))},
		{"root-symlink-abs", fromTree(tnLink("/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf"))},
		{"tdir", fromTree(tdirTree())},
		{"sorting", fromTree(sortTrap)},
		{"padding", fromTree(padding)},
		{"modes", fromTree(tnDir(
			"m644", &tnode{typ: "regular", data: "x", mode: 0o644},
			"m654", &tnode{typ: "regular", data: "group exec only", mode: 0o654},
			"m645", &tnode{typ: "regular", data: "other exec only", mode: 0o645},
			"m744", &tnode{typ: "regular", data: "user exec only", mode: 0o744},
			"m700", &tnode{typ: "regular", data: "private exec", mode: 0o700},
			"m500", &tnode{typ: "regular", data: "read-only exec", mode: 0o500},
			"m4755", &tnode{typ: "regular", data: "setuid", mode: 0o755 | os.ModeSetuid},
			"m1644", &tnode{typ: "regular", data: "sticky", mode: 0o644 | os.ModeSticky},
		))},
		{"symlinks", fromTree(tnDir(
			"abs", tnLink("/etc/passwd"),
			"dangling", tnLink("does-not-exist"),
			"up", tnLink("../x/../y"),
			"dot", tnLink("."),
			"dotdot", tnLink(".."),
			"self", tnLink("self"),
			"spaces", tnLink("a target with spaces\nand a newline"),
			"unicode", tnLink("é/日本"),
			"long", tnLink(strings.Repeat("abcdefg/", 400)+"end"),
			"to-dir", tnLink("sub"),
			"to-file", tnLink("sub/file"),
			"sub", tnDir("file", tnFile("f"), "back", tnLink("../to-dir")),
		))},
		{"nested-empties", fromTree(tnDir(
			"e1", tnDir(), "e2", tnDir("e3", tnDir("e4", tnDir())), "f", tnFile(""),
		))},
		{"deep", func(t testing.TB, path string) {
			n := tnFile("bottom\n")
			for i := 0; i < 100; i++ {
				n = tnDir("d", n, fmt.Sprintf("f%03d", i), tnFile(fmt.Sprint(i)))
			}
			tnWrite(t, path, n)
		}},
		{"many-files", func(t testing.TB, path string) {
			root := tnDir()
			for d := 0; d < 4; d++ {
				dir := tnDir()
				for i := 0; i < 500; i++ {
					dir.entries = append(dir.entries, tentry{fmt.Sprintf("f%04d", i), tnFile(tnRandom(uint64(d*1000+i), i%97))})
				}
				root.entries = append(root.entries, tentry{fmt.Sprintf("dir%d", d), dir})
			}
			tnWrite(t, path, root)
		}},
		{"big-random", fromTree(tnDir(
			"big", tnFile(tnRandom(42, 5<<20+5)),
			"big-exec", tnExec(tnRandom(43, 1<<20)),
		))},
		{"hardlinks", func(t testing.TB, path string) {
			tnWrite(t, path, tnDir("one", tnFile("shared contents\n")))
			if err := os.Link(filepath.Join(path, "one"), filepath.Join(path, "two")); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

func TestNARInteropWithNix(t *testing.T) {
	nixtest.Require(t)
	for _, tc := range interopCorpus() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, tc.name)
			tc.build(t, src)

			ours := dumpBytes(t, src)
			theirs := nixtest.Run(t, "nix-store", "--dump", src)
			requireSameNAR(t, "DumpNAR vs nix-store --dump", ours, theirs)

			narHash := Hash(sha256.Sum256(ours))
			if got := strings.TrimSpace(string(nixtest.Run(t, "nix-hash", "--type", "sha256", "--base32", src))); "sha256:"+got != narHash.String() {
				t.Errorf("nix-hash says sha256:%s, our NAR hashes to %s", got, narHash)
			}

			want, err := MakeSourcePath(DefaultStoreDir, narHash, tc.name, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if added := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--add", src))); added != want.Abs(DefaultStoreDir) {
				t.Errorf("nix-store --add gave %s, MakeSourcePath %s", added, want.Abs(DefaultStoreDir))
			}

			var m memTree
			if n, err := ReadNAR(bytes.NewReader(theirs), &m); err != nil || n != int64(len(theirs)) || m.broken != nil {
				t.Fatalf("ReadNAR of nix-store --dump = %d, %v %q", n, err, m.broken)
			}
			requireSameNAR(t, "ReadNAR of Nix's NAR re-encoded", m.reencode(), theirs)

			restored := filepath.Join(dir, "restored")
			if err := RestoreNAR(bytes.NewReader(ours), restored); err != nil {
				t.Fatalf("RestoreNAR: %v", err)
			}
			requireSameNAR(t, "DumpNAR after RestoreNAR", dumpBytes(t, restored), ours)

			nixRestored := filepath.Join(dir, "nix-restored")
			cmd := nixtest.Command(t, "nix-store", "--restore", nixRestored)
			cmd.Stdin = bytes.NewReader(ours)
			nixtest.RunCmd(t, cmd)
			requireSameNAR(t, "nix-store --dump after nix-store --restore of our NAR",
				nixtest.Run(t, "nix-store", "--dump", nixRestored), ours)
		})
	}
}

// TestFixtureClosureNAR dumps the paths Nix built and compares with what
// Nix's database records for them, and with reference/nix.md §3.
func TestFixtureClosureNAR(t *testing.T) {
	nixtest.Require(t)
	recorded := map[string]struct {
		hash string
		size int
	}{
		"/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf": {"sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg", 128},
		"/nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid":  {"sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl", 184},
		"/nix/store/lyiynp4xdriqg0003qk7cpv6x88pxjvq-p2p-top":  {"sha256:0gmrwkzy7dwsjvcrdij1gf3zwnmfid5n1vkx7axwqnrlbdsnpksc", 808},
	}
	closure := nixtest.BuildFixtureClosure(t)
	for _, p := range closure {
		nar := dumpBytes(t, p)
		h := Hash(sha256.Sum256(nar))
		if got := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--query", "--hash", p))); got != h.String() {
			t.Errorf("%s: Nix records narHash %s, DumpNAR gives %s", p, got, h)
		}
		if got := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--query", "--size", p))); got != fmt.Sprint(len(nar)) {
			t.Errorf("%s: Nix records narSize %s, DumpNAR gives %d", p, got, len(nar))
		}
		if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
			want, ok := recorded[p]
			if !ok {
				t.Errorf("fixture path %s is not the one reference/nix.md records", p)
			} else if h.String() != want.hash || len(nar) != want.size {
				t.Errorf("%s: %s %d, reference/nix.md records %s %d", p, h, len(nar), want.hash, want.size)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Hostile and broken input.

// nestedNAR is a NAR whose deepest node has depth levels path components:
// d/d/.../d, a regular file at the bottom.
func nestedNAR(levels int) []byte {
	b := narTok("nix-archive-1")
	for i := 0; i < levels; i++ {
		b = append(b, narTok("(", "type", "directory", "entry", "(", "name", "d", "node")...)
	}
	b = append(b, narTok("(", "type", "regular", "contents", "", ")")...)
	for i := 0; i < levels; i++ {
		b = append(b, narTok(")", ")")...)
	}
	return b
}

type badNAR struct {
	name string
	nar  []byte
	// restoreErr: RestoreNAR may fail with something other than ErrBadNAR
	// (the filesystem gives up first).
	restoreAnyErr bool
	// bounded: the NAR claims a huge length; parsing must not allocate it.
	bounded bool
}

func badNARs() []badNAR {
	valid := tnNAR(tnFile("hello\n"))
	reg := func(toks ...any) []byte {
		return narTok(append([]any{"nix-archive-1", "(", "type", "regular"}, toks...)...)
	}
	dir := func(entries ...any) []byte { // entries: name, node, ...
		return tnNAR(tnDir(entries...))
	}
	entry := func(toks ...any) []byte { // a directory with one raw entry
		return narTok(append(append([]any{"nix-archive-1", "(", "type", "directory", "entry", "("}, toks...), ")", ")")...)
	}
	return []badNAR{
		{name: "empty input", nar: nil},
		{name: "magic only", nar: narTok("nix-archive-1")},
		{name: "wrong magic", nar: narTok("nix-archive-2", "(", "type", "regular", "contents", "", ")")},
		{name: "magic without length", nar: narTok(rawtok("nix-archive-1\x00\x00\x00"))},
		{name: "magic length 1<<60", nar: narTok(u64tok(1 << 60)), bounded: true},
		{name: "magic length max", nar: narTok(u64tok(^uint64(0))), bounded: true},
		{name: "short length word", nar: []byte{13, 0, 0}},

		{name: "entry name ..", nar: dir("..", tnFile("x"))},
		{name: "entry name .", nar: dir(".", tnFile("x"))},
		{name: "entry name empty", nar: dir("", tnFile("x"))},
		{name: "entry name with slash", nar: dir("a/b", tnFile("x"))},
		{name: "entry name slash", nar: dir("/", tnFile("x"))},
		{name: "entry name ../escape", nar: dir("../escape", tnFile("x"))},
		{name: "entry name with NUL", nar: dir("a\x00b", tnFile("x"))},
		{name: "entry name NUL", nar: dir("\x00", tnFile("x"))},
		{name: "entry name 256 bytes", nar: dir(strings.Repeat("n", 256), tnFile("x"))},
		{name: "unsorted entries", nar: dir("b", tnFile("b"), "a", tnFile("a"))},
		{name: "unsorted by case", nar: dir("a", tnFile("a"), "B", tnFile("B"))},
		{name: "unsorted prefix", nar: dir("ab", tnFile(""), "a", tnFile(""))},
		{name: "unsorted utf-8 after ascii", nar: dir("é", tnFile(""), "z", tnFile(""))},
		{name: "duplicate entries", nar: dir("a", tnFile("1"), "a", tnFile("2"))},
		{name: "duplicate dirs", nar: dir("a", tnDir(), "a", tnDir())},
		{name: "duplicate: symlink out, then dir through it", nar: dir(
			"a", tnLink("../escape"), "a", tnDir("pwned", tnFile("gotcha")))},
		{name: "duplicate: symlink out, then file over it", nar: dir(
			"a", tnLink("../escape/pwned"), "a", tnFile("gotcha"))},
		{name: "duplicate after other entries", nar: dir("a", tnFile(""), "b", tnFile(""), "b", tnFile(""))},

		{name: "unknown node type", nar: narTok("nix-archive-1", "(", "type", "fifo", ")")},
		{name: "node type empty", nar: narTok("nix-archive-1", "(", "type", "", ")")},
		{name: "node type Regular", nar: narTok("nix-archive-1", "(", "type", "Regular", "contents", "", ")")},
		{name: "missing type keyword", nar: narTok("nix-archive-1", "(", "regular", "contents", "", ")")},
		{name: "missing open paren", nar: narTok("nix-archive-1", "type", "regular", "contents", "", ")")},
		{name: "missing close paren", nar: reg("contents", "x")},
		{name: "extra token before close", nar: reg("contents", "x", "contents", "y", ")")},
		{name: "regular without contents", nar: reg(")")},
		{name: "executable with a value", nar: reg("executable", "x", "contents", "", ")")},
		{name: "executable after contents", nar: reg("contents", "", "executable", "", ")")},
		{name: "executable twice", nar: reg("executable", "", "executable", "", "contents", "", ")")},
		{name: "symlink without target keyword", nar: narTok("nix-archive-1", "(", "type", "symlink", "/x", ")")},
		{name: "symlink empty target", nar: tnNAR(tnLink(""))},
		{name: "symlink target with NUL", nar: tnNAR(tnLink("a\x00b"))},
		{name: "symlink target 4096 bytes", nar: tnNAR(tnLink(strings.Repeat("t", 4096)))},
		{name: "directory unknown token", nar: narTok("nix-archive-1", "(", "type", "directory", "entri", ")")},
		{name: "entry without name keyword", nar: entry("nom", "a", "node", "(", "type", "regular", "contents", "", ")")},
		{name: "entry without node keyword", nar: entry("name", "a", "(", "type", "regular", "contents", "", ")")},
		{name: "entry with node but no close", nar: narTok("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a", "node",
			"(", "type", "regular", "contents", "", ")", ")")},
		{name: "token longer than any keyword", nar: narTok("nix-archive-1", "((((((((((((((((((")},

		{name: "non-zero padding in token", nar: narTok("nix-archive-1", padtok("("), "type", "regular", "contents", "", ")")},
		{name: "non-zero padding in magic", nar: narTok(padtok("nix-archive-1"), "(", "type", "regular", "contents", "", ")")},
		{name: "non-zero padding in contents", nar: reg("contents", padtok("hello\n"), ")")},
		{name: "non-zero padding in name", nar: entry("name", padtok("a"), "node", "(", "type", "regular", "contents", "", ")")},
		{name: "non-zero padding in target", nar: narTok("nix-archive-1", "(", "type", "symlink", "target", padtok("x"), ")")},

		{name: "trailing zero byte", nar: append(slices.Clone(valid), 0)},
		{name: "trailing zero word", nar: append(slices.Clone(valid), make([]byte, 8)...)},
		{name: "trailing second NAR", nar: append(slices.Clone(valid), valid...)},
		{name: "trailing after directory", nar: append(dir("a", tnFile("a")), ')')},

		{name: "name length 1<<60", nar: entry("name", u64tok(1<<60)), bounded: true},
		{name: "contents length 1<<60", nar: reg("contents", u64tok(1<<60), rawtok("abc")), bounded: true},
		{name: "contents length 1<<63", nar: reg("contents", u64tok(1<<63)), bounded: true},
		{name: "contents length max", nar: reg("contents", u64tok(^uint64(0))), bounded: true},
		{name: "target length 1<<60", nar: narTok("nix-archive-1", "(", "type", "symlink", "target", u64tok(1<<60)), bounded: true},
		{name: "token length 1<<60", nar: narTok("nix-archive-1", u64tok(1<<60)), bounded: true},
		{name: "node type length 1<<60", nar: narTok("nix-archive-1", "(", "type", u64tok(1<<60)), bounded: true},

		{name: "nested deeper than MaxNARDepth", nar: nestedNAR(MaxNARDepth + 1), restoreAnyErr: true},
		{name: "nested far deeper than MaxNARDepth", nar: nestedNAR(4 * MaxNARDepth), restoreAnyErr: true},
	}
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func TestReadNARRejects(t *testing.T) {
	for _, tc := range badNARs() {
		t.Run(tc.name, func(t *testing.T) {
			var m memTree
			before, start := totalAlloc(), time.Now()
			n, err := ReadNAR(bytes.NewReader(tc.nar), &m)
			took, alloc := time.Since(start), totalAlloc()-before
			if !errors.Is(err, ErrBadNAR) {
				t.Fatalf("ReadNAR = %d, %v; want an error wrapping ErrBadNAR", n, err)
			}
			if m.broken != nil {
				t.Errorf("reader broke visitor promises: %q", m.broken)
			}
			if n < 0 || n > int64(len(tc.nar)) {
				t.Errorf("ReadNAR reports %d bytes read of %d", n, len(tc.nar))
			}
			if tc.bounded && (alloc > 4<<20 || took > time.Second) {
				t.Errorf("rejecting took %v and allocated %d bytes", took, alloc)
			}
		})
	}
}

func TestRestoreNARRejects(t *testing.T) {
	for _, tc := range badNARs() {
		t.Run(tc.name, func(t *testing.T) {
			requireRestoreFails(t, tc.nar, !tc.restoreAnyErr)
		})
	}
}

// requireRestoreFails restores nar into a fresh parent that holds only an
// empty directory "escape", and checks that it fails and leaves the parent
// exactly as it was.
func requireRestoreFails(t *testing.T, nar []byte, wantBadNAR bool) {
	t.Helper()
	parent := t.TempDir()
	escape := filepath.Join(parent, "escape")
	if err := os.Mkdir(escape, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(parent, "out")
	err := RestoreNAR(bytes.NewReader(nar), target)
	if err == nil {
		t.Fatal("RestoreNAR accepted it")
	}
	if wantBadNAR && !errors.Is(err, ErrBadNAR) {
		t.Errorf("RestoreNAR error %v does not wrap ErrBadNAR", err)
	}
	if _, serr := os.Lstat(target); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("after the failed restore, the target exists (%v); error was %v", serr, err)
	}
	for _, d := range []string{parent, escape} {
		ents, rerr := os.ReadDir(d)
		if rerr != nil {
			t.Fatal(rerr)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if want := map[string]string{parent: "escape", escape: ""}[d]; strings.Join(names, ",") != want {
			t.Errorf("after the failed restore %s holds %q, want only %q", d, names, want)
		}
	}
}

// TestReadNARTruncated cuts valid NARs at every length.
func TestReadNARTruncated(t *testing.T) {
	for _, tree := range []*tnode{tnFile("hello\n"), tdirTree(), tnLink("target"), tnDir()} {
		nar := tnNAR(tree.sorted())
		for cut := 0; cut < len(nar); cut++ {
			var m memTree
			if _, err := ReadNAR(bytes.NewReader(nar[:cut]), &m); !errors.Is(err, ErrBadNAR) || m.broken != nil {
				t.Fatalf("ReadNAR of the first %d of %d bytes: %v %q; want ErrBadNAR", cut, len(nar), err, m.broken)
			}
		}
		var m memTree
		if _, err := ReadNAR(bytes.NewReader(nar), &m); err != nil {
			t.Fatalf("the whole NAR is rejected: %v", err)
		}
	}
}

func TestRestoreNARTruncated(t *testing.T) {
	nar := tnNAR(tdirTree().sorted())
	for cut := 0; cut < len(nar); cut++ {
		requireRestoreFails(t, nar[:cut], true)
		if t.Failed() {
			t.Fatalf("at cut %d of %d", cut, len(nar))
		}
	}
}

func TestReadNARDepthLimit(t *testing.T) {
	var m memTree
	if _, err := ReadNAR(bytes.NewReader(nestedNAR(MaxNARDepth)), &m); err != nil || m.broken != nil {
		t.Fatalf("a NAR exactly MaxNARDepth deep is rejected: %v %q", err, m.broken)
	}
	if _, err := ReadNAR(bytes.NewReader(nestedNAR(MaxNARDepth+1)), &memTree{}); !errors.Is(err, ErrBadNAR) {
		t.Fatalf("a NAR MaxNARDepth+1 deep: %v, want ErrBadNAR", err)
	}
}

func TestReadNARAcceptsOddButValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		tree *tnode
	}{
		{"entry name 255 bytes", tnDir(strings.Repeat("n", 255), tnFile(""))},
		{"symlink target 4095 bytes", tnLink(strings.Repeat("t", 4095))},
		{"names with every odd byte", tnDir("\x01", tnFile(""), "\n", tnFile(""), " ", tnFile(""), "\xff", tnFile(""))},
		{"symlink escaping", tnDir("a", tnLink("../../../etc/passwd"), "b", tnLink("/"))},
		{"file named like a keyword", tnDir(")", tnFile(""), "entry", tnDir("(", tnFile("")), "type", tnFile("contents"))},
		{"contents that look like a NAR", tnFile(string(tnNAR(tdirTree().sorted())))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nar := tnNAR(tc.tree)
			var m memTree
			if _, err := ReadNAR(bytes.NewReader(nar), &m); err != nil || m.broken != nil {
				t.Fatalf("ReadNAR: %v %q", err, m.broken)
			}
			requireSameNAR(t, "re-encoded", m.reencode(), nar)
			dir := filepath.Join(t.TempDir(), "out")
			if err := RestoreNAR(bytes.NewReader(nar), dir); err != nil {
				t.Fatalf("RestoreNAR: %v", err)
			}
			requireSameNAR(t, "DumpNAR after RestoreNAR", dumpBytes(t, dir), nar)
		})
	}
}

var errBoom = errors.New("boom")

// failAfter yields n bytes of b, then errBoom.
type failAfter struct {
	b []byte
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errBoom
	}
	k := copy(p[:min(len(p), f.n)], f.b)
	f.b, f.n = f.b[k:], f.n-k
	return k, nil
}

func TestReadNARReaderBehaviour(t *testing.T) {
	nar := tnNAR(tnDir("big", tnFile(tnRandom(7, 200_000)), "small", tnExec("x")))
	for _, r := range []struct {
		name string
		r    io.Reader
	}{
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(nar))},
		{"half reads", iotest.HalfReader(bytes.NewReader(nar))},
		{"EOF with the data", iotest.DataErrReader(bytes.NewReader(nar))},
	} {
		var m memTree
		if n, err := ReadNAR(r.r, &m); err != nil || n != int64(len(nar)) {
			t.Errorf("%s: ReadNAR = %d, %v", r.name, n, err)
		}
	}
	for _, cut := range []int{0, 7, 24, 100, 300, 150_000, len(nar) - 1} {
		_, err := ReadNAR(&failAfter{b: nar, n: cut}, &memTree{})
		if !errors.Is(err, errBoom) {
			t.Errorf("reader failing after %d bytes: ReadNAR = %v, want errBoom", cut, err)
		}
		if errors.Is(err, ErrBadNAR) {
			t.Errorf("reader failing after %d bytes: I/O error %v reported as a bad NAR", cut, err)
		}
		dir := filepath.Join(t.TempDir(), "out")
		if err := RestoreNAR(&failAfter{b: nar, n: cut}, dir); !errors.Is(err, errBoom) {
			t.Errorf("RestoreNAR of a reader failing after %d bytes: %v", cut, err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("RestoreNAR left %s behind", dir)
		}
	}
}

// visitorErr fails at the node named fail.
type visitorErr struct {
	memTree
	fail string
}

func (v *visitorErr) Directory(rel string) error {
	if rel == v.fail {
		return errBoom
	}
	return v.memTree.Directory(rel)
}

func (v *visitorErr) Regular(rel string, exec bool, size int64, r io.Reader) error {
	if rel == v.fail {
		return errBoom
	}
	return v.memTree.Regular(rel, exec, size, r)
}

func (v *visitorErr) Symlink(rel, target string) error {
	if rel == v.fail {
		return errBoom
	}
	return v.memTree.Symlink(rel, target)
}

// lazyVisitor does not read file contents.
type lazyVisitor struct{ memTree }

func (*lazyVisitor) Regular(string, bool, int64, io.Reader) error { return nil }

func TestReadNARVisitorErrors(t *testing.T) {
	nar := tnNAR(tdirTree().sorted())
	order := []string{"", "B", "a", "link", "run.sh", "sub", "sub/empty"}
	for i, fail := range order {
		v := &visitorErr{fail: fail}
		if _, err := ReadNAR(bytes.NewReader(nar), v); !errors.Is(err, errBoom) {
			t.Errorf("visitor failing at %q: ReadNAR = %v, want errBoom", fail, err)
		}
		if len(v.nodes) != i {
			t.Errorf("visitor failing at %q: %d nodes visited, want the %d before it", fail, len(v.nodes), i)
		}
	}
	if _, err := ReadNAR(bytes.NewReader(nar), &lazyVisitor{}); err == nil {
		t.Error("a visitor that leaves contents unread is not reported")
	}
}

func TestRestoreNARRefusesExistingTarget(t *testing.T) {
	nar := tnNAR(tnFile("new"))
	for _, existing := range []*tnode{tnFile("old"), tnDir("keep", tnFile("old")), tnLink("nowhere")} {
		dir := filepath.Join(t.TempDir(), "out")
		tnWrite(t, dir, existing)
		before := dumpBytes(t, dir)
		if err := RestoreNAR(bytes.NewReader(nar), dir); err == nil {
			t.Errorf("RestoreNAR over an existing %s succeeded", existing.typ)
		}
		requireSameNAR(t, "existing target after refused restore", dumpBytes(t, dir), before)
	}
}

func TestDumpNARErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := DumpNAR(io.Discard, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DumpNAR of a missing path: %v", err)
	}
	fifo := filepath.Join(dir, "tree", "p")
	tnWrite(t, filepath.Dir(fifo), tnDir("a", tnFile("a")))
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, err := DumpNAR(io.Discard, filepath.Dir(fifo)); err == nil {
		t.Errorf("DumpNAR of a tree with a FIFO: %v", err)
	}
	if _, err := DumpNAR(failWriter{}, filepath.Join(dir, "tree", "a")); !errors.Is(err, errBoom) {
		t.Errorf("DumpNAR into a failing writer: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errBoom }

// ---------------------------------------------------------------------------
// Fuzzing.

// narSeeds are valid NARs of small trees and the broken ones above.
func narSeeds() [][]byte {
	seeds := [][]byte{
		tnNAR(tnFile("")),
		tnNAR(tnFile("hello\n")),
		tnNAR(tnExec("#!/bin/sh\n")),
		tnNAR(tnLink("/nix/store/x")),
		tnNAR(tnDir()),
		tnNAR(tdirTree().sorted()),
		tnNAR(tnDir("a", tnDir("b", tnDir("c", tnFile("deep")))).sorted()),
	}
	for _, b := range badNARs() {
		if len(b.nar) < 4096 {
			seeds = append(seeds, b.nar)
		}
	}
	return seeds
}

// FuzzReadNAR: whatever ReadNAR accepts is canonical, so re-encoding the
// visited tree reproduces the input byte for byte; whatever it rejects is
// rejected as a bad NAR, without breaking its promises to the visitor.
func FuzzReadNAR(f *testing.F) {
	for _, s := range narSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m memTree
		n, err := ReadNAR(bytes.NewReader(data), &m)
		if m.broken != nil {
			t.Fatalf("reader broke visitor promises: %q", m.broken)
		}
		if n < 0 || n > int64(len(data)) {
			t.Fatalf("ReadNAR reports %d bytes of %d", n, len(data))
		}
		if err != nil {
			if !errors.Is(err, ErrBadNAR) {
				t.Fatalf("error %v does not wrap ErrBadNAR", err)
			}
			return
		}
		if n != int64(len(data)) {
			t.Fatalf("accepted after %d of %d bytes", n, len(data))
		}
		requireSameNAR(t, "accepted NAR re-encoded", m.reencode(), data)
	})
}

// stallReader yields b, then signals stalled and blocks until the test
// sends the error to fail with on release.
type stallReader struct {
	b       []byte
	stalled chan struct{}
	release chan error
}

func (r *stallReader) Read(p []byte) (int, error) {
	if len(r.b) > 0 {
		n := copy(p, r.b)
		r.b = r.b[n:]
		return n, nil
	}
	close(r.stalled)
	return 0, <-r.release
}

// diskUsage is the bytes allocated to the files under root.
func diskUsage(t testing.TB, root string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

// TestRestoreNARReservesOnlyWhatArrives: a NAR whose header claims a
// 180 MB file, followed by ten bytes and then nothing, takes a few MiB of
// disk at most while it stalls (it used to take the whole claimed size),
// and nothing once it fails.
func TestRestoreNARReservesOnlyWhatArrives(t *testing.T) {
	const claimed = 180 << 20
	nar := narTok("nix-archive-1", "(", "type", "regular", "contents", u64tok(claimed))
	nar = append(nar, "ten bytes!"...)
	r := &stallReader{b: nar, stalled: make(chan struct{}), release: make(chan error)}
	dir := filepath.Join(t.TempDir(), "out")
	done := make(chan error, 1)
	go func() { done <- RestoreNAR(r, dir) }()
	select {
	case <-r.stalled:
	case err := <-done:
		t.Fatalf("RestoreNAR ended before the input stalled: %v", err)
	}
	used := diskUsage(t, dir)
	r.release <- errBoom
	if err := <-done; !errors.Is(err, errBoom) {
		t.Fatalf("RestoreNAR = %v, want errBoom", err)
	}
	t.Logf("a NAR claiming %d bytes that sent 10 took %d bytes of disk while it stalled", claimed, used)
	if used > ReserveStep+1<<20 {
		t.Errorf("a NAR claiming %d bytes that sent 10 took %d bytes of disk; at most %d may be reserved ahead of what arrived", claimed, used, ReserveStep)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RestoreNAR left %s behind", dir)
	}
}
