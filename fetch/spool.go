package fetch

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// A spool is the NAR of one path being fetched, written chunk by chunk at
// each chunk's offset as it arrives verified. It is the resume state: after
// a crash, a chunk whose bytes in the spool hash to its ID is there (a hole
// reads as zeros, which only match a chunk of zeros, which is then right).
// Nothing else records progress, so there is nothing to get out of step.
//
// A spool is sparse: it takes disk only for the chunks written into it,
// and extents are reserved ahead of each write by at most as much as has
// arrived (nix.ExtentReserver; chunks arrive roughly in order, and a
// spool laid out in
// long runs is cheaper to write and to free: a cold sync was 1.3 times
// slower with spools grown chunk by chunk), and what is reserved past the
// last write is given back when the spool is closed. So a sync that fails
// early (a full disk, a seeder gone) leaves behind about what it fetched
// (gaps between runs aside, at most a step per spool). The sync
// using a spool holds an exclusive flock on it from opening to removal;
// CollectSpools removes only spools nobody holds.
type spool struct {
	f    *os.File
	path string // "" for a private spool, which has no name

	mu    sync.Mutex          // guards res
	res   *nix.ExtentReserver // the streams of a fetch write concurrently
	fresh bool                // nothing in it predates this sync
}

func spoolPath(dir string, p nix.Path) string { return filepath.Join(dir, p.String()+".nar") }

// DefaultSpoolDir is where a sync keeps its spools unless told otherwise.
func DefaultSpoolDir(s *store.Store) string { return filepath.Join(s.Home(), "partial") }

// openSpool opens or creates the spool of a NAR of size bytes and locks it;
// fresh says it holds nothing yet (so there is nothing to resume). If
// another sync holds the path's spool, this one gets a private spool,
// unlinked at once: both fetch the path, and the first to commit wins.
func openSpool(dir string, p nix.Path, size uint64) (sp *spool, fresh bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	name := spoolPath(dir, p)
	f, err := lockedFile(name, true)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return privateSpool(dir, size)
	}
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
		// Truncating to zero first frees whatever the file held; the
		// second truncate makes a hole of the NAR's size, which takes no
		// disk until chunks land in it.
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, false, err
		}
		if err := f.Truncate(int64(size)); err != nil {
			f.Close()
			return nil, false, err
		}
	}
	return &spool{f: f, path: name, res: nix.NewExtentReserver(f, int64(size)), fresh: fresh}, fresh, nil
}

// privateSpool is a fresh spool of size bytes that no other process or
// sync can see, and that disappears when closed.
func privateSpool(dir string, size uint64) (*spool, bool, error) {
	f, err := os.CreateTemp(dir, ".private-*.nar")
	if err != nil {
		return nil, false, err
	}
	os.Remove(f.Name())
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, false, err
	}
	return &spool{f: f, res: nix.NewExtentReserver(f, int64(size)), fresh: true}, true, nil
}

// lockedFile opens name (creating it if create) and takes an exclusive
// flock on it without waiting: an error wrapping unix.EWOULDBLOCK means
// someone holds it. The lock is on the file that still has that name: a
// file removed between the open and the lock (by CollectSpools, which
// removes only what it has locked) is let go and the new one opened.
func lockedFile(name string, create bool) (*os.File, error) {
	flag := os.O_RDWR | syscall.O_NOFOLLOW
	if create {
		flag |= os.O_CREATE
	}
	for {
		f, err := os.OpenFile(name, flag, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", name, err)
		}
		held, err1 := f.Stat()
		named, err2 := os.Lstat(name)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			return f, nil
		}
		f.Close()
		if err1 != nil {
			return nil, err1
		}
		if err2 != nil && !errors.Is(err2, fs.ErrNotExist) {
			return nil, err2
		}
		if !create && err2 != nil {
			return nil, err2
		}
	}
}

func (s *spool) writeAt(b []byte, off uint64) error {
	s.mu.Lock()
	s.res.Before(int64(off), int64(len(b)))
	s.mu.Unlock()
	_, err := s.f.WriteAt(b, int64(off))
	return err
}

// has reports whether the chunk at off is already in the spool.
func (s *spool) has(c chunk.Ref, off uint64, buf []byte) bool {
	b := buf[:c.Size]
	if _, err := s.f.ReadAt(b, int64(off)); err != nil {
		return false
	}
	return chunk.Sum(b) == c.ID
}

// reader reads the whole NAR from the start.
func (s *spool) reader() io.Reader { return io.NewSectionReader(s.f, 0, 1<<62) }

// close lets go of the spool, giving back the extents reserved past its
// last write (in a spool this sync created: in a resumed one, chunks of an
// earlier sync may lie there).
func (s *spool) close() error {
	if s.fresh {
		s.mu.Lock()
		s.res.Release()
		s.mu.Unlock()
	}
	return s.f.Close()
}

// sweepSpools removes the spools of paths that are valid: a process killed
// between registering a path and removing its spool leaves one, which no
// later sync would touch, since it plans only paths that are not valid.
// A spool another sync holds is its to remove.
func sweepSpools(dir string, s *store.Store) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".nar")
		if !ok {
			continue
		}
		if p, err := nix.ParseBase(base); err == nil {
			if ok, err := s.IsValid(p); err == nil && ok {
				name := filepath.Join(dir, e.Name())
				if f, err := lockedFile(name, false); err == nil {
					os.Remove(name)
					f.Close()
				}
			}
		}
	}
}

// spoolHolds is how many bytes of disk the spool of a NAR of size bytes
// in dir already takes (what a resumed sync need not find room for again).
func spoolHolds(dir string, p nix.Path, size uint64) uint64 {
	fi, err := os.Stat(spoolPath(dir, p))
	if err != nil || fi.Size() != int64(size) {
		return 0
	}
	return min(size, uint64(fi.Sys().(*syscall.Stat_t).Blocks)*512)
}

// remove deletes the spool (after its path became valid, or it proved
// bad): the name goes first, while the lock is still held.
func (s *spool) remove() error {
	var err error
	if s.path != "" {
		err = os.Remove(s.path)
	}
	s.f.Close()
	return err
}

// SpoolsResult says what CollectSpools removed (or would remove).
type SpoolsResult struct {
	Removed    int   // spools nobody was using
	BytesFreed int64 // the disk they took
	InUse      int   // spools left to the syncs using them
}

// CollectSpools removes the spools in dir that no sync is using: those
// of syncs that failed or were stopped (and would be resumed from them),
// or whose process died. A spool a running sync holds, in this process or
// another, is left alone. With dryRun it only reports.
func CollectSpools(dir string, dryRun bool) (*SpoolsResult, error) {
	res := &SpoolsResult{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(dir, e.Name())
		f, err := lockedFile(name, false)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			res.InUse++
			continue
		case errors.Is(err, fs.ErrNotExist):
			continue // its sync finished meanwhile
		case err != nil:
			return res, err
		}
		var used int64
		if fi, err := f.Stat(); err == nil {
			used = fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		if !dryRun {
			if err := os.Remove(name); err != nil {
				f.Close()
				return res, err
			}
		}
		f.Close()
		res.Removed++
		res.BytesFreed += used
	}
	return res, nil
}
