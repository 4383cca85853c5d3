package nix

import (
	"os"

	"golang.org/x/sys/unix"
)

// ReserveStep is the furthest an ExtentReserver reserves a file's extents
// ahead of the bytes written to it: far enough that ext4 and xfs lay a
// large file out in long extents (several times faster than growing it
// write by write), near enough that a size that is only claimed (a NAR
// header, a chunk index) and then not delivered takes little disk.
const ReserveStep = 8 << 20

// ExtentReserver reserves the extents of a file of a known final size
// ahead of its writes: by as much as has arrived, at most ReserveStep,
// never past the size. A file that keeps coming is reserved in ever
// longer runs; ten bytes claiming gigabytes reserve a block. Writes may
// come out of order (the chunks of a spool): a gap of up to a step before
// a write is reserved too, keeping the run whole, and a write further on
// starts a new run. Not safe for concurrent use.
type ExtentReserver struct {
	f        *os.File
	size     int64 // the file's final size
	received int64 // bytes written so far
	reserved int64 // the current run of extents ends here
	written  int64 // the end of the furthest write
}

// NewExtentReserver reserves for f, whose final size is size.
func NewExtentReserver(f *os.File, size int64) *ExtentReserver {
	return &ExtentReserver{f: f, size: size}
}

// Before reserves ahead of a write of n bytes at off; call it before the
// write. KEEP_SIZE: the file's size stays what is written. A failure (a
// filesystem without fallocate) only loses the speed-up; a full disk shows
// itself at the write.
func (r *ExtentReserver) Before(off, n int64) {
	r.received += n
	end := off + n
	r.written = max(r.written, end)
	if end <= r.reserved {
		return
	}
	from := r.reserved
	if off-from > ReserveStep {
		from = off
	}
	next := min(r.size, end+min(r.received, ReserveStep))
	if next > from {
		_ = unix.Fallocate(int(r.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, from, next-from)
	}
	r.reserved = next
}

// Release gives back the extents reserved past the furthest write (a file
// left incomplete keeps only what was written).
func (r *ExtentReserver) Release() {
	if r.reserved > r.written {
		_ = unix.Fallocate(int(r.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.written, r.reserved-r.written)
		r.reserved = r.written
	}
}
