package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal end of a new pseudo-terminal, or skips the
// test where there is none.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("cannot unlock a pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("cannot name a pseudo-terminal: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("cannot open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

func TestNARRefusesTerminals(t *testing.T) {
	tty := openPTY(t)
	if !isTerminal(tty) {
		t.Fatal("isTerminal does not recognise a pseudo-terminal")
	}
	r, w, err := os.Pipe()
	mustDo(t, err)
	defer r.Close()
	defer w.Close()
	if isTerminal(w) || isTerminal(&strings.Builder{}) {
		t.Fatal("isTerminal takes a pipe or a buffer for a terminal")
	}
	src := writeHi(t)

	stderr, code := runTroveIO(t, "", strings.NewReader(""), tty, "nar", "dump", src)
	if code != 2 || !strings.Contains(stderr, "trove: refusing to write a binary NAR to a terminal; redirect standard output") {
		t.Errorf("nar dump to a terminal: exit %d, %q", code, stderr)
	}

	dst := filepath.Join(t.TempDir(), "dst")
	stderr, code = runTroveIO(t, "", tty, &strings.Builder{}, "nar", "restore", dst)
	if code != 2 || !strings.Contains(stderr, "reads a NAR from standard input, which is a terminal") {
		t.Errorf("nar restore from a terminal: exit %d, %q", code, stderr)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Errorf("nar restore from a terminal created %s", dst)
	}
}
