package store

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestLockRecordsItsHolder(t *testing.T) {
	home := t.TempDir()
	if _, held, err := LockHolder(filepath.Join(home, "none")); held || err != nil {
		t.Fatalf("LockHolder of a home that does not exist: held %v, %v", held, err)
	}
	if _, err := os.Stat(filepath.Join(home, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LockHolder created the home: %v", err)
	}

	s, err := Open(home, Options{Role: RoleAgentStarting})
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	for _, role := range []Role{RoleAgentStarting, RoleAgent, RoleAgentStopping} {
		if role != RoleAgentStarting {
			if err := s.SetRole(role); err != nil {
				t.Fatal(err)
			}
		}
		h, held, err := LockHolder(home)
		if !held || err != nil || h != (Holder{PID: me, Role: role}) {
			t.Errorf("LockHolder while held as %s: %+v, held %v, %v", role, h, held, err)
		}
		var locked *LockedError
		if _, err := Open(home, Options{}); !errors.As(err, &locked) || locked.Holder != (Holder{PID: me, Role: role}) || !errors.Is(err, ErrLocked) {
			t.Errorf("Open while held as %s: %v", role, err)
		}
	}
	s.Close()
	if _, held, err := LockHolder(home); held || err != nil {
		t.Fatalf("LockHolder after Close: held %v, %v", held, err)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "lock")); len(b) != 0 {
		t.Errorf("the record outlives the lock: %q", b)
	}

	// A one-shot command is the default holder.
	s, err = Open(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h, _, _ := LockHolder(home); h != (Holder{PID: me, Role: RoleCommand}) {
		t.Errorf("holder of a default Open: %+v", h)
	}
}

// A holder killed with -9 leaves its record behind: the next Open takes
// the lock all the same, and someone who finds the lock held while it
// still shows (before the new holder writes its own) does not believe it.
func TestStaleLockRecord(t *testing.T) {
	home := t.TempDir()
	lock := filepath.Join(home, "lock")
	dead := "2147483646 agent\n" // beyond any pid_max
	if err := os.WriteFile(lock, []byte(dead), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, held, err := LockHolder(home); held || err != nil {
		t.Fatalf("LockHolder of a stale record: held %v, %v", held, err)
	}

	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = Open(home, Options{})
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Holder != (Holder{}) {
		t.Fatalf("Open while held under a stale record: %v", err)
	}
	if waited := time.Since(began); waited < recordWait {
		t.Errorf("Open believed a dead pid's record after %v; want it to look again for %v", waited, recordWait)
	}

	// Once the holder writes its record, that is what others see.
	if err := os.WriteFile(lock, []byte("1 command\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if h, held, _ := LockHolder(home); !held || h != (Holder{PID: 1, Role: RoleCommand}) {
		t.Errorf("LockHolder: %+v, held %v", h, held)
	}
}
