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
// kept within a budget (fetch.next): the largest NAR of the plan, so a
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
