package profile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// The embedded store is the one profiles live on today.
var _ Store = (*store.Store)(nil)

// testProfiles opens a store in a fresh home, closed when the test ends,
// and its profiles.
func testProfiles(t testing.TB) (*store.Store, *Profiles) {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, OpenProfiles(s)
}

// twoGenerations adds two small trees to s, to switch between.
func twoGenerations(t testing.TB, s *store.Store) [2]nix.Path {
	t.Helper()
	var out [2]nix.Path
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
	_, p := testProfiles(t)
	ctx := context.Background()
	holder := func() string { return "generation 4, the first" }
	unlock, err := p.Lock(ctx, "laptop", holder, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var told string
	_, err = p.Lock(ctx, "laptop", holder, 300*time.Millisecond, func(h string) { told = h })
	if err == nil || !strings.Contains(err.Error(), "another activation of laptop is in progress (generation 4, the first)") {
		t.Fatalf("second activation: %v", err)
	}
	if told != "generation 4, the first" {
		t.Fatalf("the waiter was told %q", told)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatal("the second activation did not wait")
	}
	// It waits and proceeds when the first finishes: the first finishes
	// once the second is told that it waits.
	unlock2, err := p.Lock(ctx, "laptop", holder, 5*time.Second, func(string) { go unlock() })
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
	var roots [2]nix.Path
	for i, arg := range strings.Fields(os.Getenv("TROVE_SWITCH_ROOTS")) {
		roots[i], _ = nix.ParseBase(arg)
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
		// Not synchronisation: the kill lands at a random moment of the
		// child's switching, which is what the test is about.
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

// treeWithActivation adds a tree whose bin/activate is script.
func treeWithActivation(t testing.TB, s *store.Store, script string) nix.Path {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cfg")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "activate"), []byte(script), 0o755)
	pi, err := s.AddTree(context.Background(), dir, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	return pi.Path
}

// requireHeldBack fails the test unless laptop's HeldBack is as wanted
// after step.
func requireHeldBack(t *testing.T, p *Profiles, step string, wantHeld bool, wantCur, wantHighest uint64) {
	t.Helper()
	held, cur, highest, err := p.HeldBack("laptop")
	if err != nil || held != wantHeld || cur != wantCur || highest != wantHighest {
		t.Fatalf("%s: held %v current %d highest %d (%v); want %v %d %d", step, held, cur, highest, err, wantHeld, wantCur, wantHighest)
	}
}

// TestHeldBack: a rollback holds the profile below its highest generation
// until Resume or an activation of the newest.
func TestHeldBack(t *testing.T) {
	s, p := testProfiles(t)
	roots := twoGenerations(t, s)
	ctx := context.Background()
	check := func(step string, wantHeld bool, wantCur, wantHighest uint64) {
		t.Helper()
		requireHeldBack(t, p, step, wantHeld, wantCur, wantHighest)
	}
	check("no profile", false, 0, 0)
	for i, r := range roots {
		if err := p.Activate(ctx, "laptop", uint64(i+1), r, "", ActivateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	check("at the newest", false, 2, 2)
	if err := p.Activate(ctx, "laptop", 1, roots[0], "", ActivateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("rolled back", true, 1, 2)
	// A profile an older trove left has no record: its newest link counts.
	os.Remove(p.highestFile("laptop"))
	check("no record", true, 1, 2)
	if err := p.Resume("laptop"); err != nil {
		t.Fatal(err)
	}
	check("resumed", false, 1, 1)
	if err := p.Activate(ctx, "laptop", 2, roots[1], "", ActivateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("the newest again", false, 2, 2)
}

// TestActivationTimeout: a hanging activation command is stopped at its
// timeout with its whole process group, the failure says so, and the
// profile's lock is free again for the next activation.
func TestActivationTimeout(t *testing.T) {
	s, p := testProfiles(t)
	pidFile := filepath.Join(t.TempDir(), "child")
	// The command leaves a grandchild behind that would outlive a kill of
	// the command alone.
	root := treeWithActivation(t, s, "#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nwait\n")
	start := time.Now()
	err := p.Activate(context.Background(), "laptop", 1, root, "bin/activate", ActivateOptions{Run: true, Timeout: 500 * time.Millisecond})
	var ae *ActivationError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "timed out after 500ms") {
		t.Fatalf("activation: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the activation returned after %s", d)
	}
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if child == 0 {
		t.Fatal("the activation command did not start its child")
	}
	gone := false
	for range 100 {
		if syscall.Kill(child, 0) != nil {
			gone = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !gone {
		syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("the activation's child %d outlived the timeout", child)
	}
	if cur, _ := p.Current("laptop"); cur != 1 {
		t.Fatalf("profile at %d, want the new generation selected", cur)
	}
	unlock, err := p.Lock(context.Background(), "laptop", func() string { return "test" }, time.Second, nil)
	if err != nil {
		t.Fatalf("lock after the timeout: %v", err)
	}
	unlock()
}

// TestSwitchToConfigurationGetsSwitch: NixOS's activation command runs as
// nixos-rebuild switch runs it.
func TestSwitchToConfigurationGetsSwitch(t *testing.T) {
	for _, tt := range []struct {
		rel  string
		want []string
	}{
		{"bin/switch-to-configuration", []string{"switch"}},
		{"bin/activate", nil},
		{"sw/bin/switch-to-configuration", nil},
	} {
		if got := activationArgs(tt.rel); !slices.Equal(got, tt.want) {
			t.Errorf("activationArgs(%q) = %q, want %q", tt.rel, got, tt.want)
		}
	}
}
