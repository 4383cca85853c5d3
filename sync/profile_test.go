package sync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/store"
)

// twoGenerations adds two small trees to s, to switch between.
func twoGenerations(t testing.TB, s *store.Store) [2]store.Path {
	t.Helper()
	var out [2]store.Path
	for i := range out {
		dir := filepath.Join(t.TempDir(), "cfg")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "version"), []byte(fmt.Sprint("generation ", i+1)), 0o644)
		pi, err := s.AddTree(context.Background(), dir, "cfg")
		if err != nil {
			t.Fatal(err)
		}
		out[i] = pi.Path
	}
	return out
}

func TestTwoActivationsAtOnce(t *testing.T) {
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := OpenProfiles(s)
	unlock, err := p.Lock("laptop", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := p.Lock("laptop", 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "another activation of laptop is in progress") {
		t.Fatalf("second activation: %v", err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatal("the second activation did not wait")
	}
	// It waits and proceeds when the first finishes.
	go func() { time.Sleep(200 * time.Millisecond); unlock() }()
	unlock2, err := p.Lock("laptop", 5*time.Second)
	if err != nil {
		t.Fatalf("waiting activation: %v", err)
	}
	unlock2()
}

// switchChildEnv makes the test binary switch a profile back and forth
// until killed.
const switchChildEnv = "TROVE_SWITCH_CHILD_HOME"

func switchChild(home string) {
	s, err := store.Open(home, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	p := OpenProfiles(s)
	var roots [2]store.Path
	for i, arg := range strings.Fields(os.Getenv("TROVE_SWITCH_ROOTS")) {
		roots[i], _ = store.ParseBase(arg)
	}
	fmt.Println("ready")
	for n := uint64(0); ; n++ {
		if err := p.Switch("laptop", n%2+1, roots[n%2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
}

// TestKillDuringActivation kills a process that keeps switching a profile
// at random moments: the profile must always point at a whole generation.
func TestKillDuringActivation(t *testing.T) {
	home := t.TempDir()
	s, err := store.Open(home, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	roots := twoGenerations(t, s)
	s.Close()
	r := rand.New(rand.NewPCG(7, 7))
	for round := range 10 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), switchChildEnv+"="+home, "TROVE_SWITCH_ROOTS="+roots[0].String()+" "+roots[1].String())
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		out.Read(buf)
		time.Sleep(time.Duration(5+r.IntN(60)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		s, err := store.Open(home, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p := OpenProfiles(s)
		cur, err := p.Current("laptop")
		if err != nil || (cur != 1 && cur != 2) {
			t.Fatalf("round %d: profile points at generation %d: %v", round, cur, err)
		}
		tree, err := filepath.EvalSymlinks(filepath.Join(ProfilesDir(home), "laptop"))
		if err != nil {
			t.Fatalf("round %d: profile does not resolve: %v", round, err)
		}
		b, err := os.ReadFile(filepath.Join(tree, "version"))
		if err != nil || string(b) != "generation "+strconv.FormatUint(cur, 10) {
			t.Fatalf("round %d: generation %d's tree says %q (%v)", round, cur, b, err)
		}
		s.Close()
	}
}
