package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/trove-p2p/trove/nix"
)

// A skeleton describes a stored path's NAR as literal segments (framing,
// names, symlink targets, padding) and references to the files of its tree,
// so any byte range of the NAR can be produced from the tree without
// keeping a second copy of the contents.
type skeleton struct {
	segs []nix.Segment
	offs []int64 // NAR offset of each Segment
	size int64
}

func newSkeleton(segs []nix.Segment) *skeleton {
	s := &skeleton{segs: segs, offs: make([]int64, len(segs))}
	for i, g := range segs {
		s.offs[i] = s.size
		s.size += g.Len()
	}
	return s
}

const (
	segLit  = 0
	segFile = 1
)

func (s *skeleton) encode() []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(s.segs)))
	for _, g := range s.segs {
		if g.Lit != nil {
			b = append(b, segLit)
			b = binary.AppendUvarint(b, uint64(len(g.Lit)))
			b = append(b, g.Lit...)
		} else {
			b = append(b, segFile)
			b = binary.AppendUvarint(b, uint64(len(g.File)))
			b = append(b, g.File...)
			b = binary.AppendUvarint(b, uint64(g.Size))
		}
	}
	return b
}

var errBadSkeleton = errors.New("corrupt NAR skeleton in the store database")

func decodeSkeleton(b []byte) (*skeleton, error) {
	uv := func() (uint64, bool) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, false
		}
		b = b[k:]
		return v, true
	}
	n, ok := uv()
	if !ok || n > uint64(len(b)) {
		return nil, errBadSkeleton
	}
	segs := make([]nix.Segment, 0, n)
	for range n {
		if len(b) == 0 {
			return nil, errBadSkeleton
		}
		kind := b[0]
		b = b[1:]
		l, ok := uv()
		if !ok || l > uint64(len(b)) {
			return nil, errBadSkeleton
		}
		data := b[:l:l]
		b = b[l:]
		switch kind {
		case segLit:
			segs = append(segs, nix.Segment{Lit: data})
		case segFile:
			size, ok := uv()
			if !ok || size == 0 || size > 1<<62 {
				return nil, errBadSkeleton
			}
			segs = append(segs, nix.Segment{File: string(data), Size: int64(size)})
		default:
			return nil, errBadSkeleton
		}
	}
	if len(b) != 0 {
		return nil, errBadSkeleton
	}
	return newSkeleton(segs), nil
}

// writeRange writes NAR bytes [off, off+n) of the tree at root to w.
func (s *skeleton) writeRange(w io.Writer, root string, off, n int64, buf []byte) error {
	if off < 0 || n < 0 || off+n > s.size {
		return fmt.Errorf("NAR range %d+%d is outside the NAR's %d bytes", off, n, s.size)
	}
	i := sort.Search(len(s.offs), func(i int) bool { return s.offs[i] > off }) - 1
	for ; n > 0; i++ {
		g := s.segs[i]
		rel := off - s.offs[i]
		m := min(g.Len()-rel, n)
		if g.Lit != nil {
			if _, err := w.Write(g.Lit[rel : rel+m]); err != nil {
				return err
			}
		} else if err := copyFileRange(w, filepath.Join(root, filepath.FromSlash(g.File)), rel, m, buf); err != nil {
			return err
		}
		off += m
		n -= m
	}
	return nil
}

func copyFileRange(w io.Writer, name string, off, n int64, buf []byte) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.CopyBuffer(onlyWriter{w}, io.NewSectionReader(f, off, n), buf)
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	if got != n {
		return fmt.Errorf("reading %s: file is shorter than its NAR says; the store is damaged, run `trove verify`", name)
	}
	return nil
}

// readAt fills dst with NAR bytes starting at off, reading file contents
// straight into dst.
func (s *skeleton) readAt(dst []byte, root string, off int64, files *fileCache) error {
	n := int64(len(dst))
	if off < 0 || off+n > s.size {
		return fmt.Errorf("NAR range %d+%d is outside the NAR's %d bytes", off, n, s.size)
	}
	i := sort.Search(len(s.offs), func(i int) bool { return s.offs[i] > off }) - 1
	for len(dst) > 0 {
		g := s.segs[i]
		rel := off - s.offs[i]
		m := min(g.Len()-rel, int64(len(dst)))
		if g.Lit != nil {
			copy(dst[:m], g.Lit[rel:rel+m])
		} else if err := files.readAt(dst[:m], filepath.Join(root, filepath.FromSlash(g.File)), rel); err != nil {
			return err
		}
		dst = dst[m:]
		off += m
		i++
	}
	return nil
}

// fileCache keeps tree files open for serving chunks: a chunk comes from
// one or two files, and opening each for every 64 KiB read cost half as
// much as the read. Bounded; a nil cache opens and closes every time.
type fileCache struct {
	mu    sync.Mutex
	files map[string]*os.File
}

// maxOpenFiles bounds the file descriptors a fileCache holds.
const maxOpenFiles = 128

func newFileCache() *fileCache { return &fileCache{files: map[string]*os.File{}} }

func (c *fileCache) readAt(dst []byte, name string, off int64) error {
	if c == nil {
		return readFileAt(dst, name, off)
	}
	c.mu.Lock()
	f := c.files[name]
	c.mu.Unlock()
	if f == nil {
		var err error
		if f, err = os.Open(name); err != nil {
			return err
		}
		c.mu.Lock()
		if old := c.files[name]; old != nil {
			f.Close()
			f = old
		} else {
			if len(c.files) >= maxOpenFiles {
				for k, g := range c.files { // evict one at random
					g.Close()
					delete(c.files, k)
					break
				}
			}
			c.files[name] = f
		}
		c.mu.Unlock()
	}
	if _, err := f.ReadAt(dst, off); errors.Is(err, os.ErrClosed) {
		return readFileAt(dst, name, off) // evicted while we read
	} else if err != nil {
		return fmt.Errorf("reading %s: %w; the store is damaged, run `trove verify`", name, err)
	}
	return nil
}

// forget closes the files of the tree at root (being deleted).
func (c *fileCache) forget(root string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, f := range c.files {
		if name == root || strings.HasPrefix(name, root+"/") {
			f.Close()
			delete(c.files, name)
		}
	}
}

// close closes every file.
func (c *fileCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, f := range c.files {
		f.Close()
		delete(c.files, name)
	}
}

func readFileAt(dst []byte, name string, off int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(dst, off); err != nil {
		return fmt.Errorf("reading %s: %w; the store is damaged, run `trove verify`", name, err)
	}
	return nil
}

// onlyReader and onlyWriter hide WriterTo/ReaderFrom so CopyBuffer uses
// our buffer.
type (
	onlyReader struct{ io.Reader }
	onlyWriter struct{ io.Writer }
)
