package nixdaemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nix-community/go-nix/pkg/wire"
	"github.com/trove-p2p/trove/nix"
)

// Worker protocol constants (Nix 2.8.0 src/libstore/worker-protocol.hh).
const (
	workerMagic1 = 0x6e697863
	workerMagic2 = 0x6478696f

	// protocolVersion is what the client announces: 1.34.
	protocolVersion = 1<<8 | 34
	// minMinor is the oldest protocol minor version accepted (Nix 2.0).
	minMinor = 21

	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461 // the daemon wants data from the client
	stderrWrite         = 0x64617416 // data for the client's sink
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54
)

// Operations (WorkerOp).
const (
	opIsValidPath           = 1
	opAddTempRoot           = 11
	opAddIndirectRoot       = 12
	opQueryAllValidPaths    = 23
	opQueryPathInfo         = 26
	opQueryPathFromHashPart = 29
	opQueryValidPaths       = 31
	opNarFromPath           = 38
	opAddToStoreNar         = 39
)

// Bounds on what the client reads from the daemon.
const (
	maxStr     = 64 << 10 // a store path, hash, signature, CA, field, version
	maxMsg     = 1 << 20  // a log line or an error message
	maxList    = 1 << 24  // items in a list (allocated as they arrive)
	maxFields  = 1 << 10  // fields of an activity or result
	maxTraces  = 1 << 10  // traces of an error
	maxVersion = 1 << 10  // the daemon's Nix version string
)

// ErrProtocol is wrapped by the error for a reply that breaks the protocol.
var ErrProtocol = errors.New("malformed reply from the Nix daemon")

// ErrClosed is wrapped by the error of every call on a closed Client: one
// that was closed, or whose connection failed.
var ErrClosed = errors.New("nixdaemon: connection closed")

// DaemonError is an error the daemon reported for an operation, such as
// "path '/nix/store/…' is not valid" or "cannot add path '/nix/store/…'
// because it lacks a valid signature". The connection stays usable.
type DaemonError struct {
	Op  string // the operation, e.g. "AddToStoreNar"
	Msg string // the daemon's message, without ANSI colour escapes
}

func (e *DaemonError) Error() string { return "nix-daemon: " + e.Op + ": " + e.Msg }

// reader reads daemon replies. Its first error sticks: after it, the
// connection is out of step and must be closed.
type reader struct {
	r   *bufio.Reader
	err error
}

func (r *reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return r.err
}

func (r *reader) bad(format string, a ...any) error {
	return r.fail(fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, a...)))
}

func (r *reader) u64() (uint64, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := wire.ReadUint64(r.r)
	if err != nil {
		return 0, r.fail(eof(err))
	}
	return n, nil
}

func (r *reader) bool() (bool, error) {
	n, err := r.u64()
	if err != nil {
		return false, err
	}
	if n > 1 {
		return false, r.bad("boolean is %d", n)
	}
	return n == 1, nil
}

// str reads a string of at most max bytes.
func (r *reader) str(max int) (string, error) {
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", r.bad("string of %d bytes, at most %d allowed", n, max)
	}
	b := make([]byte, n+uint64(padLen(n)))
	if _, err := io.ReadFull(r.r, b); err != nil {
		return "", r.fail(eof(err))
	}
	for _, c := range b[n:] {
		if c != 0 {
			return "", r.bad("non-zero padding")
		}
	}
	return string(b[:n]), nil
}

func padLen(n uint64) int { return int((8 - n%8) % 8) }

// count reads the length of a list of at most max items. Callers append
// items as they arrive rather than allocate count of them.
func (r *reader) count(max int) (int, error) {
	n, err := r.u64()
	if err != nil {
		return 0, err
	}
	if n > uint64(max) {
		return 0, r.bad("list of %d items, at most %d allowed", n, max)
	}
	return int(n), nil
}

func (r *reader) strs(max int) ([]string, error) {
	n, err := r.count(max)
	if err != nil {
		return nil, err
	}
	var ss []string
	for range n {
		s, err := r.str(maxStr)
		if err != nil {
			return nil, err
		}
		ss = append(ss, s)
	}
	return ss, nil
}

// path reads a store path; "" is the zero Path when empty is allowed.
func (r *reader) path(storeDir string, empty bool) (nix.Path, error) {
	s, err := r.str(maxStr)
	if err != nil || (s == "" && empty) {
		return nix.Path{}, err
	}
	p, err := nix.ParsePath(storeDir, s)
	if err != nil {
		return nix.Path{}, r.bad("%v", err)
	}
	return p, nil
}

func (r *reader) paths(storeDir string, max int) ([]nix.Path, error) {
	n, err := r.count(max)
	if err != nil {
		return nil, err
	}
	var ps []nix.Path
	for range n {
		p, err := r.path(storeDir, false)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// skipFields reads the fields of an activity or result: a count, then for
// each a type (0 int, 1 string) and its value.
func (r *reader) skipFields() ([]any, error) {
	n, err := r.count(maxFields)
	if err != nil {
		return nil, err
	}
	var fs []any
	for range n {
		typ, err := r.u64()
		if err != nil {
			return nil, err
		}
		switch typ {
		case 0:
			i, err := r.u64()
			if err != nil {
				return nil, err
			}
			fs = append(fs, i)
		case 1:
			s, err := r.str(maxMsg)
			if err != nil {
				return nil, err
			}
			fs = append(fs, s)
		default:
			return nil, r.bad("field type %d", typ)
		}
	}
	return fs, nil
}

// daemonError reads the error following STDERR_ERROR: for protocol >= 1.26
// Nix's serialised Error ("Error", level, name, msg, havePos, traces),
// before it a message and an exit status.
func (r *reader) daemonError(minor int, op string) error {
	var msg string
	if minor >= 26 {
		typ, err := r.str(maxStr)
		if err != nil {
			return err
		}
		if typ != "Error" {
			return r.bad("error of type %q", typ)
		}
		if _, err := r.u64(); err != nil { // level
			return err
		}
		if _, err := r.str(maxStr); err != nil { // name, unused
			return err
		}
		if msg, err = r.str(maxMsg); err != nil {
			return err
		}
		if err := r.noPos(); err != nil {
			return err
		}
		n, err := r.count(maxTraces)
		if err != nil {
			return err
		}
		for range n {
			if err := r.noPos(); err != nil {
				return err
			}
			t, err := r.str(maxMsg)
			if err != nil {
				return err
			}
			msg += "\n" + t
		}
	} else {
		var err error
		if msg, err = r.str(maxMsg); err != nil {
			return err
		}
		if _, err := r.u64(); err != nil { // exit status
			return err
		}
	}
	return &DaemonError{Op: op, Msg: strings.TrimSpace(stripANSI(msg))}
}

// noPos reads the havePos of an error or trace, which Nix always sends as 0.
func (r *reader) noPos() error {
	n, err := r.u64()
	if err == nil && n != 0 {
		return r.bad("error position %d (only 0 is defined)", n)
	}
	return err
}

// eof turns a clean EOF in the middle of a reply into ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writer writes requests. Its first error sticks.
type writer struct {
	w   *bufio.Writer
	err error
}

func (w *writer) u64(n uint64) {
	if w.err == nil {
		w.err = wire.WriteUint64(w.w, n)
	}
}

func (w *writer) bool(b bool) {
	if b {
		w.u64(1)
	} else {
		w.u64(0)
	}
}

func (w *writer) str(s string) {
	if w.err == nil {
		w.err = wire.WriteString(w.w, s)
	}
}

func (w *writer) strs(ss []string) {
	w.u64(uint64(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

func (w *writer) flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// stripANSI removes the ANSI escape sequences (CSI: ESC [ params final)
// Nix puts in its messages to colour them.
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && s[j] >= 0x20 && s[j] <= 0x3f {
				j++
			}
			if j < len(s) && s[j] >= 0x40 && s[j] <= 0x7e {
				i = j
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
