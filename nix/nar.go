package nix

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// NAR format limits. Nix has none for names or targets beyond the
// filesystem's; these caps keep a hostile NAR from making us allocate.
const (
	narMagic = "nix-archive-1"
	// MaxNARDepth bounds directory nesting: deeper than Linux's PATH_MAX
	// (4096 bytes, at least two per level) cannot be restored anyway.
	MaxNARDepth = 2048
	maxNameLen  = 255  // NAME_MAX
	maxTarget   = 4095 // PATH_MAX without the NUL
	maxTokenLen = 16   // longest keyword is "nix-archive-1"
)

// ErrBadNAR is wrapped by every error the NAR reader returns for malformed input.
var ErrBadNAR = errors.New("invalid NAR")

// NodeType is the kind of a NAR node.
type NodeType uint8

const (
	TypeRegular NodeType = iota + 1
	TypeDirectory
	TypeSymlink
)

// NARVisitor receives the nodes of a NAR in order. rel is the node's path
// relative to the root, "" for the root itself, slash-separated.
type NARVisitor interface {
	Directory(rel string) error
	// Regular must consume exactly size bytes from r (or fail).
	Regular(rel string, executable bool, size int64, r io.Reader) error
	Symlink(rel, target string) error
}

// --- writing ---------------------------------------------------------------

// narPad is the zero padding to the next multiple of 8.
var narPad [8]byte

func padLen(n uint64) int { return int((8 - n%8) % 8) }

func appendStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, narPad[:padLen(uint64(len(s)))]...)
}

// Segment is a piece of a NAR: either literal bytes (framing, names,
// symlink targets, padding) or the contents of one regular file in the tree.
// The sequence of segments of a tree is its skeleton; contents are never
// copied into it.
type Segment struct {
	Lit  []byte
	File string // slash-separated path relative to the root, when Lit is nil
	Size int64
}

// Len is the number of NAR bytes g stands for.
func (g Segment) Len() int64 {
	if g.Lit != nil {
		return int64(len(g.Lit))
	}
	return g.Size
}

// WalkNAR calls emit with the segments of the NAR of the tree at root, in
// order. Literal segments are coalesced.
func WalkNAR(root string, emit func(Segment) error) error {
	w := &segWalker{root: root, emit: emit}
	w.lit = appendStr(w.lit, narMagic)
	if err := w.node("", 0); err != nil {
		return err
	}
	return w.flush()
}

type segWalker struct {
	root string
	lit  []byte
	emit func(Segment) error
}

func (w *segWalker) flush() error {
	if len(w.lit) == 0 {
		return nil
	}
	err := w.emit(Segment{Lit: w.lit})
	w.lit = nil
	return err
}

func (w *segWalker) node(rel string, depth int) error {
	if depth > MaxNARDepth {
		return fmt.Errorf("%s: nested deeper than %d levels", filepath.Join(w.root, rel), MaxNARDepth)
	}
	full := filepath.Join(w.root, filepath.FromSlash(rel))
	fi, err := os.Lstat(full)
	if err != nil {
		return err
	}
	w.lit = appendStr(w.lit, "(")
	w.lit = appendStr(w.lit, "type")
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		w.lit = appendStr(w.lit, "regular")
		if mode&0o100 != 0 {
			w.lit = appendStr(w.lit, "executable")
			w.lit = appendStr(w.lit, "")
		}
		w.lit = appendStr(w.lit, "contents")
		size := fi.Size()
		w.lit = binary.LittleEndian.AppendUint64(w.lit, uint64(size))
		if size > 0 {
			if err := w.flush(); err != nil {
				return err
			}
			if err := w.emit(Segment{File: rel, Size: size}); err != nil {
				return err
			}
			w.lit = append(w.lit, narPad[:padLen(uint64(size))]...)
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		w.lit = appendStr(w.lit, "symlink")
		w.lit = appendStr(w.lit, "target")
		w.lit = appendStr(w.lit, target)
	case mode.IsDir():
		w.lit = appendStr(w.lit, "directory")
		names, err := readDirNames(full)
		if err != nil {
			return err
		}
		for _, name := range names {
			w.lit = appendStr(w.lit, "entry")
			w.lit = appendStr(w.lit, "(")
			w.lit = appendStr(w.lit, "name")
			w.lit = appendStr(w.lit, name)
			w.lit = appendStr(w.lit, "node")
			child := name
			if rel != "" {
				child = rel + "/" + name
			}
			if err := w.node(child, depth+1); err != nil {
				return err
			}
			w.lit = appendStr(w.lit, ")")
		}
	default:
		return fmt.Errorf("%s: cannot be put in a NAR: it is a %s, not a file, directory or symlink", full, mode.Type())
	}
	w.lit = appendStr(w.lit, ")")
	return nil
}

// readDirNames returns the entry names of dir in bytewise order, as Nix sorts them.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// DumpNAR writes the NAR serialisation of the file, directory or symlink at
// path to w, byte-identical to `nix-store --dump`. It returns the NAR size.
func DumpNAR(w io.Writer, path string) (int64, error) {
	var n int64
	buf := make([]byte, 1<<20)
	err := WalkNAR(path, func(s Segment) error {
		if s.Lit != nil {
			m, err := w.Write(s.Lit)
			n += int64(m)
			return err
		}
		m, err := copyFile(w, filepath.Join(path, filepath.FromSlash(s.File)), s.Size, buf)
		n += m
		return err
	})
	return n, err
}

// HashPath returns the NAR hash and NAR size of the tree at path, as
// `nix-hash --type sha256 --base32` and `nix-store --dump | wc -c` give.
func HashPath(path string) (Hash, int64, error) {
	h := sha256.New()
	n, err := DumpNAR(h, path)
	var sum Hash
	h.Sum(sum[:0])
	return sum, n, err
}

// copyFile copies exactly size bytes of the file at name to w; a file that
// changed size while being read is an error, not a silently different NAR.
func copyFile(w io.Writer, name string, size int64, buf []byte) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyBuffer(w, io.LimitReader(onlyReader{f}, size), buf)
	if err != nil {
		return n, fmt.Errorf("reading %s: %w", name, err)
	}
	if n != size {
		return n, fmt.Errorf("reading %s: file shrank from %d to %d bytes while being read", name, size, n)
	}
	return n, nil
}

// onlyReader hides WriterTo/ReaderFrom so CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// --- reading ---------------------------------------------------------------

// narReader parses a NAR strictly: everything `nix-store --restore` rejects,
// plus unsorted or duplicate entries, oversized names and trailing bytes.
type narReader struct {
	r   *bufio.Reader
	off int64
	v   NARVisitor
	// With capture on, the reader records the skeleton of what it parses:
	// lit collects bytes that are not file contents, segs the finished segments.
	capture bool
	lit     []byte
	segs    []Segment
	tok     [8]byte
}

// ReadNAR parses the NAR on r, calling v for each node in order, and fails if
// anything follows the NAR. It returns the NAR's size in bytes.
func ReadNAR(r io.Reader, v NARVisitor) (int64, error) {
	nr := &narReader{r: bufio.NewReaderSize(r, 64<<10), v: v}
	return nr.run()
}

// ReadNARSkeleton is ReadNAR that also returns the NAR's skeleton: its
// segments, with file contents left out (see Segment).
func ReadNARSkeleton(r io.Reader, v NARVisitor) (int64, []Segment, error) {
	br := skeletonReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		skeletonReaders.Put(br)
	}()
	nr := &narReader{r: br, v: v, capture: true}
	n, err := nr.run()
	return n, nr.segs, err
}

// skeletonReaders are ReadNARSkeleton's buffers, kept between calls: the
// store unpacks every path it adds through one, small paths too.
var skeletonReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<20) }}

func (nr *narReader) run() (int64, error) {
	if err := nr.expect(narMagic); err != nil {
		return nr.off, err
	}
	if err := nr.node("", 0); err != nil {
		return nr.off, err
	}
	if nr.capture && len(nr.lit) > 0 {
		nr.segs = append(nr.segs, Segment{Lit: nr.lit})
		nr.lit = nil
	}
	if _, err := nr.r.ReadByte(); err == nil {
		return nr.off, nr.bad("trailing bytes after the end of the NAR")
	} else if err != io.EOF {
		return nr.off, err
	}
	return nr.off, nil
}

func (nr *narReader) bad(format string, a ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrBadNAR, nr.off, fmt.Sprintf(format, a...))
}

// full reads exactly len(p) bytes; running out is a truncated NAR.
func (nr *narReader) full(p []byte) error {
	n, err := io.ReadFull(nr.r, p)
	nr.off += int64(n)
	if nr.capture {
		nr.lit = append(nr.lit, p[:n]...)
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nr.bad("truncated")
		}
		return err
	}
	return nil
}

func (nr *narReader) u64() (uint64, error) {
	if err := nr.full(nr.tok[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(nr.tok[:]), nil
}

func (nr *narReader) padding(n uint64) error {
	p := padLen(n)
	if p == 0 {
		return nil
	}
	var b [8]byte
	if err := nr.full(b[:p]); err != nil {
		return err
	}
	for _, c := range b[:p] {
		if c != 0 {
			return nr.bad("non-zero padding")
		}
	}
	return nil
}

// str reads a string of at most max bytes.
func (nr *narReader) str(max int, what string) (string, error) {
	n, err := nr.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", nr.bad("%s is %d bytes long, at most %d allowed", what, n, max)
	}
	b := make([]byte, n)
	if err := nr.full(b); err != nil {
		return "", err
	}
	return string(b), nr.padding(n)
}

// expect reads the tokens want, in order.
func (nr *narReader) expect(want ...string) error {
	for _, w := range want {
		got, err := nr.str(maxTokenLen, "token")
		if err != nil {
			return err
		}
		if got != w {
			return nr.bad("expected %q, found %q", w, got)
		}
	}
	return nil
}

// valueAfter reads the tokens keys, then a string of at most max bytes:
// the value of what.
func (nr *narReader) valueAfter(max int, what string, keys ...string) (string, error) {
	if err := nr.expect(keys...); err != nil {
		return "", err
	}
	return nr.str(max, what)
}

func (nr *narReader) node(rel string, depth int) error {
	if depth > MaxNARDepth {
		return nr.bad("directories nested deeper than %d levels", MaxNARDepth)
	}
	typ, err := nr.valueAfter(maxTokenLen, "node type", "(", "type")
	if err != nil {
		return err
	}
	switch typ {
	case "regular":
		if err := nr.regular(rel); err != nil {
			return err
		}
	case "symlink":
		target, err := nr.valueAfter(maxTarget, "symlink target", "target")
		if err != nil {
			return err
		}
		if target == "" || strings.IndexByte(target, 0) >= 0 {
			return nr.bad("symlink %q has an empty target or one containing NUL", rel)
		}
		if err := nr.v.Symlink(rel, target); err != nil {
			return err
		}
	case "directory":
		if err := nr.v.Directory(rel); err != nil {
			return err
		}
		if err := nr.entries(rel, depth); err != nil {
			return err
		}
		return nil // entries consumed the closing ")"
	default:
		return nr.bad("unknown node type %q", typ)
	}
	return nr.expect(")")
}

func (nr *narReader) regular(rel string) error {
	tok, err := nr.str(maxTokenLen, "token")
	if err != nil {
		return err
	}
	exec := false
	if tok == "executable" {
		exec = true
		if err := nr.expect(""); err != nil {
			return err
		}
		if tok, err = nr.str(maxTokenLen, "token"); err != nil {
			return err
		}
	}
	if tok != "contents" {
		return nr.bad("expected \"contents\", found %q", tok)
	}
	size, err := nr.u64()
	if err != nil {
		return err
	}
	if size > 1<<62 {
		return nr.bad("file %q claims %d bytes", rel, size)
	}
	if nr.capture && size > 0 {
		nr.segs = append(nr.segs, Segment{Lit: nr.lit}, Segment{File: rel, Size: int64(size)})
		nr.lit = nil
	}
	// Contents bypass full(), so they never enter the skeleton.
	cr := &contentReader{nr: nr, left: int64(size)}
	if err := nr.v.Regular(rel, exec, int64(size), cr); err != nil {
		return err
	}
	if cr.left != 0 {
		return fmt.Errorf("NAR visitor left %d bytes of %q unread", cr.left, rel)
	}
	return nr.padding(size)
}

// contentReader yields a file's contents; running out early is a truncated NAR.
type contentReader struct {
	nr   *narReader
	left int64
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.nr.r.Read(p)
	c.left -= int64(n)
	c.nr.off += int64(n)
	if err == io.EOF {
		if c.left > 0 {
			return n, c.nr.bad("truncated inside file contents")
		}
		err = nil
	}
	return n, err
}

func (nr *narReader) entries(rel string, depth int) error {
	prev := ""
	for i := 0; ; i++ {
		tok, err := nr.str(maxTokenLen, "token")
		if err != nil {
			return err
		}
		if tok == ")" {
			return nil
		}
		if tok != "entry" {
			return nr.bad("expected \"entry\" or \")\", found %q", tok)
		}
		name, err := nr.valueAfter(maxNameLen, "entry name", "(", "name")
		if err != nil {
			return err
		}
		if err := checkEntryName(name); err != nil {
			return nr.bad("%v", err)
		}
		if i > 0 && name <= prev {
			if name == prev {
				return nr.bad("duplicate entry %q", name)
			}
			return nr.bad("entry %q comes after %q: entries must be sorted", name, prev)
		}
		prev = name
		if err := nr.expect("node"); err != nil {
			return err
		}
		child := name
		if rel != "" {
			child = rel + "/" + name
		}
		if err := nr.node(child, depth+1); err != nil {
			return err
		}
		if err := nr.expect(")"); err != nil {
			return err
		}
	}
}

func checkEntryName(name string) error {
	switch {
	case name == "":
		return errors.New("empty entry name")
	case name == "." || name == "..":
		return fmt.Errorf("entry name %q is not allowed", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("entry name %q contains '/' or NUL", name)
	}
	return nil
}
