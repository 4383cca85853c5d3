package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// treeWriter is a NARVisitor that materialises a NAR as a tree at root.
// Entry names were checked by the reader (no "/", "..", "." or NUL), and
// every file is created with O_EXCL|O_NOFOLLOW, so nothing lands outside root.
type treeWriter struct {
	root string
	// readOnly marks store trees: files 0444 (0555 if executable). Their
	// directories stay owner-writable (0755) so that whoever owns a trove
	// home can delete it with rm -rf, as tests and `trove demo` do; verify
	// catches anything added to a tree.
	readOnly bool
	buf      []byte
}

var _ NARVisitor = (*treeWriter)(nil)

func (t *treeWriter) path(rel string) string {
	if rel == "" {
		return t.root
	}
	return filepath.Join(t.root, filepath.FromSlash(rel))
}

func (t *treeWriter) Directory(rel string) error {
	p := t.path(rel)
	return os.Mkdir(p, 0o755)
}

func (t *treeWriter) Regular(rel string, executable bool, size int64, r io.Reader) error {
	mode := os.FileMode(0o644)
	if t.readOnly {
		mode = 0o444
	}
	if executable {
		mode |= 0o111
	}
	f, err := os.OpenFile(t.path(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	if t.buf == nil {
		t.buf = make([]byte, 1<<20)
	}
	_, err = io.CopyBuffer(&preallocWriter{f: f, size: size}, onlyReader{r}, t.buf)
	if err == nil && executable {
		// The exec bit is part of the NAR: set it exactly, whatever the umask.
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (t *treeWriter) Symlink(rel, target string) error {
	return os.Symlink(target, t.path(rel))
}

type onlyWriter struct{ io.Writer }

// preallocStep is the furthest a large file's extents are reserved ahead
// of the bytes written to it: far enough that ext4 and xfs lay the file out in
// long extents, near enough that a NAR that claims a huge file and then
// sends little (or stalls) reserves little disk.
const preallocStep = 8 << 20

// preallocWriter writes a regular file of a NAR, reserving its extents a
// step at a time ahead of the bytes written, never beyond what the NAR
// claims. The size a NAR claims is only a claim: a reservation made from
// it alone would let ten bytes of input take gigabytes of disk.
type preallocWriter struct {
	f        *os.File
	size     int64 // the size the NAR claims
	written  int64
	reserved int64 // bytes reserved from the start of the file
}

func (w *preallocWriter) Write(p []byte) (int, error) {
	end := w.written + int64(len(p))
	if w.size >= 256<<10 && end > w.reserved {
		// Ahead by as much as has arrived, up to a step: a file that
		// keeps coming is reserved in ever longer runs.
		next := min(w.size, end+min(end, preallocStep))
		// KEEP_SIZE: the file's size stays what was written. A failure
		// (a filesystem without fallocate) only loses the speed-up; a full
		// disk shows itself at the write.
		_ = unix.Fallocate(int(w.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, w.reserved, next-w.reserved)
		w.reserved = next
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	return n, err
}

// RestoreNAR unpacks the NAR on r into dir, which must not exist. On any
// error, whatever was written is removed and dir does not exist.
func RestoreNAR(r io.Reader, dir string) error {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists; restore needs a new path", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	t := &treeWriter{root: dir}
	if _, err := ReadNAR(r, t); err != nil {
		_ = removeTree(dir)
		return err
	}
	return nil
}

// removeTree deletes a tree even when its directories are read-only, as
// store trees are.
func removeTree(root string) error {
	err := os.RemoveAll(root)
	if err == nil {
		return nil
	}
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(root)
}
