package fetch

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Disk use of a sync. A path's NAR is first in its spool, which takes disk
// only as verified chunks land in it; unpacking writes its tree beside the
// spool, and the spool goes when the path is committed. So each path takes
// about its NAR size at any moment, except while it is held twice: from
// the start of its unpacking until its commit. The bytes held twice are
// kept within a budget (scheduler.nextIngest): the largest NAR of the plan, so a
// sync never needs more than its missing closure's NAR bytes plus the
// largest of them, and that is what it checks is free before it starts.
// Unpacking paths ahead of their references keeps both cores busy while
// the rest arrives, so where more is free the budget also takes half of
// what is free beyond that need: on a disk with just enough room, a
// sync's peak is its closure plus its largest path, and on a roomy one it
// unpacks ahead as far as the graph allows.

// NoSpaceError is returned by a sync that does not fit on the disk: before
// it fetches anything, when the free space is short of what it may need,
// or when the disk filled up during it. It wraps syscall.ENOSPC.
type NoSpaceError struct {
	Dir  string // the directory that lacks space: the home, or the spool directory
	Need uint64 // the most the rest of the sync may take there
	Free uint64 // free there when the sync checked
	Err  error  // the write that failed, if the disk filled during the sync
}

func (e *NoSpaceError) Error() string {
	what := fmt.Sprintf("not enough disk space in %s for this sync: it needs up to %s and %s is free",
		e.Dir, humanBytes(int64(e.Need)), humanBytes(int64(e.Free)))
	if e.Err != nil {
		what = fmt.Sprintf("the disk filled up in %s (%v): the rest of this sync needs up to %s and %s is free",
			e.Dir, e.Err, humanBytes(int64(e.Need)), humanBytes(int64(e.Free)))
	}
	what += "; free at least " + humanBytes(int64(e.Need-min(e.Need, e.Free))) +
		" there (trove gc removes the paths no GC root needs, and the spools of stopped syncs), then run the sync again"
	if e.Err != nil {
		what += ": it resumes from what it has fetched"
	}
	return what
}

func (e *NoSpaceError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return syscall.ENOSPC
}

// freeSpace is the space free to this process on the filesystem holding
// dir (or its nearest existing parent), and that filesystem's device.
func freeSpace(dir string) (free, dev uint64, err error) {
	for {
		var fi os.FileInfo
		if fi, err = os.Stat(dir); err == nil {
			dev = uint64(fi.Sys().(*syscall.Stat_t).Dev)
			break
		}
		if !errors.Is(err, os.ErrNotExist) || filepath.Dir(dir) == dir {
			return 0, 0, err
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	blocks := st.Bavail
	if os.Geteuid() == 0 {
		blocks = st.Bfree // root may use the blocks reserved for it
	}
	return blocks * uint64(st.Bsize), dev, nil
}

// checkSpace fails with a NoSpaceError when a filesystem the sync writes
// to (the store's trees, the spools) has less than need free; otherwise
// it returns the least space free beyond need on them.
func checkSpace(need uint64, home string, dirs ...string) (spare uint64, err error) {
	seen := map[uint64]bool{}
	spare = math.MaxUint64
	for i, dir := range dirs {
		free, dev, err := freeSpace(dir)
		if err != nil {
			return 0, err
		}
		if seen[dev] {
			continue
		}
		seen[dev] = true
		if free < need {
			where := dir
			if i == 0 {
				where = home
			}
			return 0, &NoSpaceError{Dir: where, Need: need, Free: free}
		}
		spare = min(spare, free-need)
	}
	return spare, nil
}

// checkSpace fails with a NoSpaceError unless the rest of the transfer
// fits: the missing paths' NARs, less what their spools hold already, plus
// the largest of them, which may be held twice. It sets the scheduler's
// budget of bytes held twice to that largest NAR plus half the space free
// beyond the need.
func (f *transfer) checkSpace(fe *Fetcher) error {
	if len(f.pl.items) == 0 {
		return nil
	}
	largest := f.pl.largest()
	var need uint64
	for _, it := range f.pl.items {
		need += it.info.NarSize - spoolHolds(f.opts.SpoolDir, it.info.Path, it.info.NarSize)
	}
	trees := filepath.Dir(fe.store.TreePath(f.pl.items[0].info.Path))
	spare, err := checkSpace(need+largest, fe.store.Home(), trees, f.opts.SpoolDir)
	if err != nil {
		return err
	}
	f.lock().budget = largest + min(spare/2, math.MaxUint64/2)
	f.unlock()
	return nil
}

// largest is the largest NAR of the plan.
func (pl *plan) largest() uint64 {
	var n uint64
	for _, it := range pl.items {
		n = max(n, it.info.NarSize)
	}
	return n
}

// noSpace turns a transfer that failed for want of disk into a
// NoSpaceError that says how much more the rest of it needs, and where.
func (f *transfer) noSpace(fe *Fetcher, err error) error {
	var ns *NoSpaceError
	if err == nil || errors.As(err, &ns) || !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	s := f.lock()
	left := uint64(max(0, s.bytesTotal-s.bytesDone))
	f.unlock()
	need := left + f.pl.largest()
	free, _, _ := freeSpace(fe.store.Home())
	return &NoSpaceError{Dir: fe.store.Home(), Need: need, Free: free, Err: err}
}
