package nix

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// TreeWriter is a NARVisitor that materialises a NAR as a tree at root.
// Entry names were checked by the reader (no "/", "..", "." or NUL), and
// every file is created with O_EXCL|O_NOFOLLOW, so nothing lands outside root.
type TreeWriter struct {
	root string
	// readOnly marks store trees: files 0444 (0555 if executable). Their
	// directories stay owner-writable (0755) so that whoever owns a trove
	// home can delete it with rm -rf, as tests and `trove demo` do; verify
	// catches anything added to a tree.
	readOnly bool
}

// copyBufs are Regular's copy buffers: a closure of thousands of small
// paths writes a tree for each, and a fresh megabyte per tree, zeroed,
// cost the simulated room of 256 a fifth of its CPU.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var _ NARVisitor = (*TreeWriter)(nil)

// NewTreeWriter returns a TreeWriter that writes under root, which must not
// exist. readOnly makes files read-only, as store trees are.
func NewTreeWriter(root string, readOnly bool) *TreeWriter {
	return &TreeWriter{root: root, readOnly: readOnly}
}

func (t *TreeWriter) path(rel string) string {
	if rel == "" {
		return t.root
	}
	return filepath.Join(t.root, filepath.FromSlash(rel))
}

func (t *TreeWriter) Directory(rel string) error {
	p := t.path(rel)
	return os.Mkdir(p, 0o755)
}

func (t *TreeWriter) Regular(rel string, executable bool, size int64, r io.Reader) error {
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
	buf := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(newPreallocWriter(f, size), onlyReader{r}, *buf)
	copyBufs.Put(buf)
	if err == nil && executable {
		// The exec bit is part of the NAR: set it exactly, whatever the umask.
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (t *TreeWriter) Symlink(rel, target string) error {
	return os.Symlink(target, t.path(rel))
}

type onlyWriter struct{ io.Writer }

// preallocWriter writes a regular file of a NAR, reserving its extents
// ahead of the bytes written (ExtentReserver): the size a NAR claims is
// only a claim.
type preallocWriter struct {
	f       *os.File
	r       *ExtentReserver // nil for a small file
	written int64
}

func newPreallocWriter(f *os.File, size int64) *preallocWriter {
	w := &preallocWriter{f: f}
	if size >= 256<<10 {
		w.r = NewExtentReserver(f, size)
	}
	return w
}

func (w *preallocWriter) Write(p []byte) (int, error) {
	if w.r != nil {
		w.r.Before(w.written, int64(len(p)))
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
	t := &TreeWriter{root: dir}
	if _, err := ReadNAR(r, t); err != nil {
		_ = RemoveTree(dir)
		return err
	}
	return nil
}

// RemoveTree deletes a tree even when its directories are read-only, as
// store trees are.
func RemoveTree(root string) error {
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
