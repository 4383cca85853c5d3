package main

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGCRemovesSpoolsOfStoppedSyncs: trove gc removes the spools that no
// sync holds and says how much disk they took; a spool that a sync holds,
// in this process (the agent) or another, stays.
func TestGCRemovesSpoolsOfStoppedSyncs(t *testing.T) {
	home := newHome(t)
	mustTrove(t, home, "gc")
	dir := filepath.Join(home, "partial")
	mustDo(t, os.MkdirAll(dir, 0o700))
	spool := func(name string) string {
		p := filepath.Join(dir, strings.Repeat(name[:1], 32)+"-"+name+".nar")
		b := make([]byte, 1<<20)
		rand.Read(b)
		mustDo(t, os.WriteFile(p, b, 0o600))
		return p
	}
	stopped, here, there := spool("stopped"), spool("here"), spool("there")

	// A sync in this process holds here.
	f, err := os.OpenFile(here, os.O_RDWR, 0)
	mustDo(t, err)
	defer f.Close()
	mustDo(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	// A sync in another process holds there.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	other := exec.Command("flock", "--exclusive", there, "sleep", "60")
	mustDo(t, other.Start())
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		g, _ := os.Open(there)
		err := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		g.Close()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) never took its lock")
		}
	}

	if out := mustTrove(t, home, "gc", "--dry-run"); out != "0 paths would be removed, 0 B would be freed; 1 spool of stopped syncs would be removed, 1.0 MiB would be freed; 2 spools in use by running syncs kept\n" {
		t.Errorf("gc --dry-run printed %q", out)
	}
	if _, err := os.Stat(stopped); err != nil {
		t.Errorf("gc --dry-run removed a spool: %v", err)
	}
	if out := mustTrove(t, home, "gc"); out != "0 paths removed, 0 B freed; 1 spool of stopped syncs removed, 1.0 MiB freed; 2 spools in use by running syncs kept\n" {
		t.Errorf("gc printed %q", out)
	}
	if _, err := os.Stat(stopped); !os.IsNotExist(err) {
		t.Errorf("gc left the spool of a stopped sync: %v", err)
	}
	for _, p := range []string{here, there} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("gc removed a spool in use: %v", err)
		}
	}
}
