package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/store"
)

// holdStoreEnv makes the test binary, started again by
// TestStoreInUseByAnotherProcess, open the store in the named home and hold
// it until its standard input closes.
const holdStoreEnv = "TROVE_TEST_HOLD_STORE"

func holdStore(home string) int {
	s, err := store.Open(home, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func TestStoreInUseByAnotherProcess(t *testing.T) {
	home := newHome(t)
	mustTrove(t, home, "init")

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), holdStoreEnv+"="+home)
	child.Stderr = os.Stderr
	release, err := child.StdinPipe()
	mustDo(t, err)
	out, err := child.StdoutPipe()
	mustDo(t, err)
	mustDo(t, child.Start())
	t.Cleanup(func() {
		release.Close()
		_ = child.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the child holding the store said %q (%v)", line, err)
	}

	want := fmt.Sprintf("in use by pid %d", child.Process.Pid)
	for _, args := range [][]string{{"init"}, {"path-info", "--all"}, {"gc"}} {
		stdout, stderr, code := runTrove(t, home, args...)
		if code != 1 || !strings.HasPrefix(stderr, "trove: ") || !strings.Contains(stderr, want) || stdout != "" {
			t.Errorf("trove %s while another process holds the store: exit %d, stdout %q, stderr %q; want exit 1 and %q",
				strings.Join(args, " "), code, stdout, stderr, want)
		}
	}

	// Once the other process lets go, the store opens again.
	release.Close()
	mustDo(t, child.Wait())
	mustTrove(t, home, "gc")
}

func TestStoreInUseInThisProcess(t *testing.T) {
	home := newHome(t)
	s := openStore(t, home)
	_, stderr, code := runTrove(t, home, "verify", "--all")
	if want := fmt.Sprintf("in use by pid %d", os.Getpid()); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("verify while the store is open: exit %d, %q; want exit 1 and %q", code, stderr, want)
	}
	mustDo(t, s.Close())
	if got := mustTrove(t, home, "verify", "--all"); got != "checked 0 paths, no problems\n" {
		t.Errorf("verify --all of an empty store printed %q", got)
	}
}
