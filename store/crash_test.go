package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv makes the test binary act as a store writer that runs until killed.
const crashChildEnv = "TROVE_CRASH_CHILD_HOME"

func TestMain(m *testing.M) {
	if home := os.Getenv(crashChildEnv); home != "" {
		crashChild(home)
		return
	}
	os.Exit(m.Run())
}

// crashChild adds trees of several sizes, makes some roots and collects
// garbage, forever, so a kill lands in every phase of a write.
func crashChild(home string) {
	s, err := Open(home, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	seed, _ := strconv.ParseUint(os.Getenv("TROVE_CRASH_SEED"), 10, 64)
	r := rand.New(rand.NewPCG(seed, 1))
	src, _ := os.MkdirTemp("", "crash-src")
	ctx := context.Background()
	fmt.Println("ready")
	for i := 0; ; i++ {
		dir := filepath.Join(src, strconv.Itoa(i))
		os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
		for j := range 1 + r.IntN(20) {
			os.WriteFile(filepath.Join(dir, "sub", strconv.Itoa(j)), randomBytes(r.Uint64(), r.IntN(300<<10)), 0o644)
		}
		pi, err := s.AddTree(ctx, dir, "t"+strconv.Itoa(i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		if r.IntN(3) == 0 {
			s.AddRoot(pi.Path)
		}
		if r.IntN(4) == 0 {
			if _, err := s.GC(ctx, false); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(5)
			}
		}
	}
}

func TestKillDuringWritesLeavesConsistentStore(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process repeatedly; skipped with -short")
	}
	home := t.TempDir()
	rounds := 12
	r := rand.New(rand.NewPCG(42, 42))
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+home, "TROVE_CRASH_SEED="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("round %d: child did not start: %v", round, err)
		}
		// The random delay is the thing under test: a kill at any point.
		time.Sleep(time.Duration(20+r.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		s, err := Open(home, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		var problems []Problem
		n, err := s.Verify(context.Background(), nil, func(p Problem) { problems = append(problems, p) })
		if err != nil {
			t.Fatal(err)
		}
		if len(problems) > 0 {
			t.Fatalf("round %d: store inconsistent after kill -9: %v", round, problems)
		}
		// Every tree on disk is a valid path (leftovers were removed).
		ents, _ := os.ReadDir(filepath.Join(home, "store"))
		if len(ents) != n {
			t.Fatalf("round %d: %d trees on disk, %d valid paths", round, len(ents), n)
		}
		s.Close()
		t.Logf("round %d: %d valid paths, consistent", round, n)
	}
}
