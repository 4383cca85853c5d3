package profile

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTrialMarkOfAnotherUserIgnored: the owner of a per-user profile's
// directory cannot make the root agent run a command of its choosing, as
// root, by writing a trial mark there: a mark another user wrote is not
// acted on.
func TestTrialMarkOfAnotherUserIgnored(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no nobody")
	}
	s, p := testProfiles(t)
	openUp(t, s.Home())
	out := t.TempDir()
	openUp(t, out)
	os.Chmod(out, 0o777)
	report := filepath.Join(out, "uid")
	good := treeWithActivation(t, s, "#!/bin/sh\ntrue\n")
	evil := treeWithActivation(t, s, "#!/bin/sh\nid -u > "+report+"\n")
	dir := filepath.Join(t.TempDir(), "alice-profiles")
	os.MkdirAll(dir, 0o755)
	openUp(t, dir)
	os.Chown(dir, atoi(t, nobody.Uid), atoi(t, nobody.Gid))
	if err := p.Record("home", filepath.Join(dir, "home-manager")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Activate(ctx, "home", 1, good, "bin/activate", ActivateOptions{Run: true, Following: true}); err != nil {
		t.Fatal(err)
	}
	// What the owner (nobody) can write into its own directory:
	l, _ := p.place("home")
	tr := &trial{Generation: 99, Previous: 1, PrevRoot: evil.Abs(s.StoreDir()), PrevRel: "bin/activate", Run: true}
	if err := writeJSON(l.mark("trial"), tr); err != nil {
		t.Fatal(err)
	}
	os.Chown(l.mark("trial"), atoi(t, nobody.Uid), atoi(t, nobody.Gid))
	p.Recover(ctx, "home", ActivateOptions{})
	if b, err := os.ReadFile(report); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Fatalf("the owner of a per-user profile (uid %s) made the agent run its command as uid 0", nobody.Uid)
	}
}

// TestManualActivationSettlesTrial: activating by hand the generation a
// crashed trial left (as the status hint suggests) settles the trial; the
// next Recover does not undo it.
func TestManualActivationSettlesTrial(t *testing.T) {
	s, p := testProfiles(t)
	log := filepath.Join(t.TempDir(), "activations")
	one := treeWithCheck(t, s, "one", log, "exit 0")
	two := treeWithCheck(t, s, "two", log, "exit 0")
	ctx := context.Background()
	if err := p.Activate(ctx, "web", 1, one, "bin/activate", ActivateOptions{Run: true, Following: true}); err != nil {
		t.Fatal(err)
	}
	l, _ := p.place("web")
	tr := &trial{Generation: 2, Previous: 1, PrevRoot: one.Abs(s.StoreDir()), PrevRel: "bin/activate", Run: true, Started: time.Now(), Deadline: time.Now().Add(time.Minute)}
	writeJSON(l.mark("trial"), tr)
	p.Switch("web", 2, two) // killed here
	// The user re-runs it by hand, and it succeeds.
	if err := p.Activate(ctx, "web", 2, two, "bin/activate", ActivateOptions{Run: true}); err != nil {
		t.Fatal(err)
	}
	err := p.Recover(ctx, "web", ActivateOptions{})
	if cur, _ := p.Current("web"); cur != 2 {
		t.Fatalf("Recover undid a successful manual activation: now on %d (%v)", cur, err)
	}
}

// TestAtBootTimesOut: switch-to-configuration boot is bounded by the
// activation timeout.
func TestAtBootTimesOut(t *testing.T) {
	s, p := testProfiles(t)
	dir := filepath.Join(t.TempDir(), "system")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "switch-to-configuration"), []byte("#!/bin/sh\nsleep 5\n"), 0o755)
	pi, err := s.AddTree(context.Background(), dir, "nixos-system")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Activate(context.Background(), "nixos", 1, pi.Path, "bin/switch-to-configuration",
		ActivateOptions{Run: true, Following: true, AtBoot: true, Timeout: 300 * time.Millisecond})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("switch-to-configuration boot ran %v with a 300ms timeout (err %v)", took, err)
	}
}

// TestRollbackThatCannotSwitchKeepsTrial: a rollback whose switch fails
// keeps the trial mark, so that it is tried again, and does not claim to
// have rolled back.
func TestRollbackThatCannotSwitchKeepsTrial(t *testing.T) {
	s, p := testProfiles(t)
	log := filepath.Join(t.TempDir(), "activations")
	one := treeWithCheck(t, s, "one", log, "exit 0")
	two := treeWithCheck(t, s, "two", log, "exit 0")
	ctx := context.Background()
	p.Activate(ctx, "web", 1, one, "bin/activate", ActivateOptions{Run: true, Following: true})
	l, _ := p.place("web")
	// generation 1's link is gone (deleted by hand), so there is nothing
	// to switch back to
	os.Remove(l.gen(1))
	tr := &trial{Generation: 2, Previous: 1, PrevRoot: one.Abs(s.StoreDir()), PrevRel: "bin/activate", Run: true}
	writeJSON(l.mark("trial"), tr)
	p.Switch("web", 2, two)
	err := p.Recover(ctx, "web", ActivateOptions{})
	var rb *RolledBackError
	if err == nil || errors.As(err, &rb) {
		t.Fatalf("Recover with a rollback that cannot switch: %v", err)
	}
	cur, _ := p.Current("web")
	tm, _ := l.readTrial()
	if cur == 2 && tm == nil {
		t.Fatalf("rollback failed (%v) yet the trial mark is gone: the profile stays on failed generation %d for good", err, cur)
	}
}
