package sync

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/store"
)

// A spool is the NAR of one path being fetched, written chunk by chunk at
// each chunk's offset as it arrives verified. It is the resume state: after
// a crash, a chunk whose bytes in the spool hash to its ID is there (a hole
// reads as zeros, which only match a chunk of zeros, which is then right).
// Nothing else records progress, so there is nothing to get out of step.
type spool struct {
	f    *os.File
	path string
}

func spoolPath(dir string, p store.Path) string { return filepath.Join(dir, p.String()+".nar") }

// openSpool opens or creates the spool of a NAR of size bytes; fresh says
// it holds nothing yet (so there is nothing to resume).
func openSpool(dir string, p store.Path, size uint64) (sp *spool, fresh bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	name := spoolPath(dir, p)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if fi.Size() != int64(size) {
		fresh = true
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, false, err
		}
		// Reserve the space up front: faster writes, and a full disk fails
		// now rather than halfway.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(size)); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			f.Close()
			os.Remove(name)
			return nil, false, fmt.Errorf("reserving %d bytes for %s: %w", size, p, err)
		}
		if err := f.Truncate(int64(size)); err != nil {
			f.Close()
			return nil, false, err
		}
	}
	return &spool{f: f, path: name}, fresh, nil
}

func (s *spool) writeAt(b []byte, off uint64) error {
	_, err := s.f.WriteAt(b, int64(off))
	return err
}

// has reports whether the chunk at off is already in the spool.
func (s *spool) has(c store.ChunkRef, off uint64, buf []byte) bool {
	b := buf[:c.Size]
	if _, err := s.f.ReadAt(b, int64(off)); err != nil {
		return false
	}
	return store.SumChunk(b) == c.ID
}

// reader reads the whole NAR from the start.
func (s *spool) reader() io.Reader { return io.NewSectionReader(s.f, 0, 1<<62) }

func (s *spool) close() error { return s.f.Close() }

// sweepSpools removes the spools of paths that are valid: a process killed
// between registering a path and removing its spool leaves one, which no
// later sync would touch, since it plans only paths that are not valid.
func sweepSpools(dir string, s *store.Store) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".nar")
		if !ok {
			continue
		}
		if p, err := store.ParseBase(base); err == nil {
			if ok, err := s.IsValid(p); err == nil && ok {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// remove deletes the spool (after its path became valid, or it proved bad).
func (s *spool) remove() error {
	s.f.Close()
	return os.Remove(s.path)
}
