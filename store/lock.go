package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// One process owns a home's store at a time: it holds an exclusive flock
// on <home>/lock for as long as the store is open. The file records who
// holds it, one line "<pid> <role>", so that whoever finds the store
// locked can tell an agent (which commands go through) from a one-shot
// command (which lets go when it ends), and an agent still starting from
// one that serves its control socket.
//
// Only the holder writes the record, and it empties the record before it
// lets go: a record naming a live process names the holder. Between a
// holder taking the flock and writing its record, a reader sees an empty
// record, or a stale one left by a holder killed with -9 (whose pid is
// gone); that lasts microseconds, so a reader looks again (for up to
// recordWait) rather than believe it. LockHolder's probe holds a shared
// flock for a moment and writes nothing: it looks the same.

// Role says who holds a home's lock.
type Role string

const (
	// RoleCommand is a one-shot command: it lets go when it ends.
	RoleCommand Role = "command"
	// RoleAgentStarting is an agent that has the store but does not yet
	// serve its control socket.
	RoleAgentStarting Role = "agent-starting"
	// RoleAgent is an agent serving its control socket.
	RoleAgent Role = "agent"
	// RoleAgentStopping is an agent closing down: it lets go soon.
	RoleAgentStopping Role = "agent-stopping"
	// RoleUnknown is a holder that recorded no role (an older trove).
	RoleUnknown Role = ""
)

// IsAgent says whether the role is an agent's, in any state.
func (r Role) IsAgent() bool {
	return r == RoleAgentStarting || r == RoleAgent || r == RoleAgentStopping
}

// Holder is the process holding a home's lock.
type Holder struct {
	PID  int // 0 if the record could not be read
	Role Role
}

func (h Holder) String() string {
	pid := "pid unknown"
	if h.PID > 0 {
		pid = "pid " + strconv.Itoa(h.PID)
	}
	switch h.Role {
	case RoleCommand:
		return pid + ", a trove command"
	case RoleAgentStarting:
		return pid + ", a trove agent that is starting"
	case RoleAgent:
		return pid + ", a trove agent"
	case RoleAgentStopping:
		return pid + ", a trove agent that is stopping"
	}
	return pid
}

// recordWait bounds how long a reader waits for a lock's holder to
// write its record.
const recordWait = time.Second

// ErrLocked is returned by Open when another process owns the store; the
// error is a *LockedError, which says who.
var ErrLocked = errors.New("store is in use")

// LockedError says that another process owns a home's store.
type LockedError struct {
	Home   string
	Holder Holder
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%v by %v (%s): stop that process, or run this command while `trove agent` is running so it goes through the agent", ErrLocked, e.Holder, e.Home)
}

// Is makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// lockHome takes the exclusive flock on <home>/lock and records this
// process as its holder, in role.
func lockHome(home string, role Role) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(home, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	h, held, err := flockOrHolder(f, syscall.LOCK_EX)
	if err != nil || held {
		f.Close()
		if err == nil {
			err = &LockedError{Home: home, Holder: h}
		}
		return nil, err
	}
	// Without a record, others take this process for an unknown holder
	// after recordWait: that is all a failed write costs.
	_ = writeRecord(f, role)
	return f, nil
}

// flockOrHolder takes how (LOCK_EX or LOCK_SH) on the lock file f without
// waiting; if another process holds it, it returns that holder instead,
// looking again for up to recordWait for a record naming a live process.
func flockOrHolder(f *os.File, how int) (h Holder, held bool, err error) {
	deadline := time.Now().Add(recordWait)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return Holder{}, false, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return Holder{}, false, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		if h, ok := readHolder(f); ok || time.Now().After(deadline) {
			return h, true, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeRecord records this process as the lock's holder, in role. The
// record is written before the file is cut to its length, so a reader
// never finds the file empty while it is held; readers look at the first
// line only.
func writeRecord(f *os.File, role Role) error {
	rec := fmt.Sprintf("%d %s\n", os.Getpid(), role)
	if _, err := f.WriteAt([]byte(rec), 0); err != nil {
		return err
	}
	return f.Truncate(int64(len(rec)))
}

// readHolder reads a held lock's record. ok says the record names a live
// process; otherwise the holder has not written it yet (or is a probe),
// and h is the zero Holder.
func readHolder(f *os.File) (h Holder, ok bool) {
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Holder{}, false
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	pidText, role, _ := strings.Cut(strings.TrimSpace(line), " ")
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return Holder{}, false
	}
	if !processExists(pid) {
		return Holder{}, false
	}
	h = Holder{PID: pid}
	switch r := Role(role); r {
	case RoleCommand, RoleAgentStarting, RoleAgent, RoleAgentStopping:
		h.Role = r
	}
	return h, true
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// LockHolder reports whether a process owns the store in home, and who,
// without opening the store or creating anything. It holds a shared flock
// on <home>/lock for a moment when nobody else does.
func LockHolder(home string) (h Holder, held bool, err error) {
	f, err := os.Open(filepath.Join(home, "lock"))
	if errors.Is(err, fs.ErrNotExist) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, err
	}
	defer f.Close() // lets go of the shared flock, if taken
	return flockOrHolder(f, syscall.LOCK_SH)
}

// SetRole records the role in which this process holds the store, for
// others to read with LockHolder.
func (s *Store) SetRole(r Role) error {
	if err := writeRecord(s.lock, r); err != nil {
		return fmt.Errorf("recording the store's holder in %s: %w", s.home, err)
	}
	return nil
}

// unlockHome empties the record, then lets go of the lock.
func unlockHome(f *os.File) {
	_ = f.Truncate(0)
	f.Close()
}
