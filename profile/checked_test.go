package profile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// treeWithCheck adds a tree whose bin/activate appends its generation's
// name to the file log, and whose bin/check is check.
func treeWithCheck(t testing.TB, s *store.Store, name, log, check string) nix.Path {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cfg")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "activate"), []byte("#!/bin/sh\necho "+name+" >> "+log+"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "check"), []byte("#!/bin/sh\n"+check+"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644)
	pi, err := s.AddTree(context.Background(), dir, "cfg-"+name)
	if err != nil {
		t.Fatal(err)
	}
	return pi.Path
}

// TestCheckedActivation: a following activation with checks stays only
// if its activation, its checks and Healthy all pass by the deadline;
// otherwise the profile is back on the generation it had, that
// generation's activation ran again, and the failed one is never followed
// into again.
func TestCheckedActivation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		check    string // generation 2's bin/check
		own      string // the follower's own check
		healthy  error
		deadline time.Duration
		want     string // "" stays; else a word of the failure
	}{
		{"passes", "exit 0", "true", nil, 5 * time.Second, ""},
		{"published check fails", "echo disk full >&2; exit 3", "", nil, 5 * time.Second, "disk full"},
		{"own check fails", "exit 0", "test -e /nonexistent-trove", nil, 5 * time.Second, "health check"},
		{"unreachable", "exit 0", "", errors.New("no member of the trust group answers"), 5 * time.Second, "no member"},
		{"check hangs", "sleep 60", "", nil, 700 * time.Millisecond, "deadline"},
		{"activation fails", "exit 0", "", nil, 5 * time.Second, "activation command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := testProfiles(t)
			log := filepath.Join(t.TempDir(), "activations")
			one := treeWithCheck(t, s, "one", log, "exit 0")
			two := treeWithCheck(t, s, "two", log, tc.check)
			ctx := context.Background()
			if err := p.Activate(ctx, "web", 1, one, "bin/activate", ActivateOptions{Run: true, Following: true}); err != nil {
				t.Fatal(err)
			}
			rel := "bin/activate"
			if tc.name == "activation fails" {
				rel = "bin/check-missing"
			}
			o := ActivateOptions{Run: true, Following: true, CheckTimeout: tc.deadline, ActivateOf: func(uint64) string { return "bin/activate" },
				Checks: []Check{{Rel: "bin/check"}}}
			if tc.own != "" {
				o.Checks = append(o.Checks, Check{Shell: tc.own})
			}
			o.Healthy = func(context.Context) error { return tc.healthy }
			start := time.Now()
			err := p.Activate(ctx, "web", 2, two, rel, o)
			took := time.Since(start)
			cur, _ := p.Current("web")
			b, _ := os.ReadFile(log)
			runs := strings.Fields(string(b))
			if tc.want == "" {
				if err != nil || cur != 2 {
					t.Fatalf("activation: %v, on generation %d; want 2", err, cur)
				}
				if fs, _ := p.Failures("web"); len(fs) != 0 {
					t.Errorf("failures recorded: %v", fs)
				}
				return
			}
			var rb *RolledBackError
			if !errors.As(err, &rb) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("activation: %v; want a rollback for %q", err, tc.want)
			}
			if cur != 1 {
				t.Fatalf("after the rollback the profile is on generation %d, want 1", cur)
			}
			if last := runs[len(runs)-1]; last != "one" {
				t.Errorf("activations ran: %v; want generation 1's last", runs)
			}
			if took > tc.deadline+5*time.Second {
				t.Errorf("rolled back after %v, deadline %v", took, tc.deadline)
			}
			if fs, _ := p.Failures("web"); len(fs) != 1 || fs[0].Generation != 2 {
				t.Errorf("failures: %v, want generation 2", fs)
			}
			if la, _ := p.LastActivation("web"); la == nil || la.Result != ActivationRolledBack {
				t.Errorf("last activation: %+v, want rolled back", la)
			}
			// Following never goes there again, even once resumed.
			p.Resume("web")
			if err := p.Activate(ctx, "web", 2, two, "bin/activate", ActivateOptions{Run: true, Following: true}); !errors.Is(err, ErrFailedHere) {
				t.Errorf("following into the failed generation again: %v, want ErrFailedHere", err)
			}
			// By hand it still can.
			if err := p.Activate(ctx, "web", 2, two, "bin/activate", ActivateOptions{Run: true}); err != nil {
				t.Errorf("activating it by hand: %v", err)
			}
		})
	}
}

// killedTrial is a profile "web" on generation 1 (activated, logging to
// log) left as a trial of generation 2 leaves it when its process is
// killed during the checks: the mark written and the profile switched.
func killedTrial(t *testing.T) (s *store.Store, p *Profiles, l place, one nix.Path, log string) {
	t.Helper()
	s, p = testProfiles(t)
	log = filepath.Join(t.TempDir(), "activations")
	one = treeWithCheck(t, s, "one", log, "exit 0")
	two := treeWithCheck(t, s, "two", log, "exit 0")
	if err := p.Activate(context.Background(), "web", 1, one, "bin/activate", ActivateOptions{Run: true, Following: true}); err != nil {
		t.Fatal(err)
	}
	l, _ = p.place("web")
	tr := &trial{Generation: 2, Previous: 1, PrevRoot: one.Abs(s.StoreDir()), PrevRel: "bin/activate", Run: true, Started: time.Now(), Deadline: time.Now().Add(time.Minute)}
	if err := writeJSON(l.mark("trial"), tr); err != nil {
		t.Fatal(err)
	}
	if err := p.Switch("web", 2, two); err != nil {
		t.Fatal(err)
	}
	return s, p, l, one, log
}

// TestRecoverAfterKill: a process that died during a trial leaves its
// mark; Recover puts the profile back and marks the generation failed.
func TestRecoverAfterKill(t *testing.T) {
	_, p, _, _, log := killedTrial(t)
	ctx := context.Background()
	// A Recover by a process that is stopping does nothing and leaves the
	// mark for the next one.
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Recover(stopped, "web", ActivateOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recover while stopping: %v", err)
	}
	if cur, _ := p.Current("web"); cur != 2 {
		t.Fatalf("a stopping Recover moved the profile to %d", cur)
	}
	var rb *RolledBackError
	if err := p.Recover(ctx, "web", ActivateOptions{}); !errors.As(err, &rb) || rb.Gen != 2 || rb.Previous != 1 {
		t.Fatalf("Recover: %v", err)
	}
	if cur, _ := p.Current("web"); cur != 1 {
		t.Fatalf("after Recover the profile is on %d, want 1", cur)
	}
	if b, _ := os.ReadFile(log); strings.TrimSpace(string(b)) != "one\none" {
		t.Errorf("activations: %q, want generation 1's twice", b)
	}
	if err := p.Recover(ctx, "web", ActivateOptions{}); err != nil {
		t.Errorf("a second Recover: %v, want nothing to do", err)
	}
}

// TestCheckLeavesNothingBehind: a check that starts something in the
// background and exits 0 passes (it does not wait for what it left, nor
// count as failed), and what it left is killed.
func TestCheckLeavesNothingBehind(t *testing.T) {
	s, p := testProfiles(t)
	log := filepath.Join(t.TempDir(), "activations")
	pidFile := filepath.Join(t.TempDir(), "pid")
	one := treeWithCheck(t, s, "one", log, "exit 0")
	two := treeWithCheck(t, s, "two", log, "sleep 60 &\necho $! > "+pidFile+"\nexit 0")
	ctx := context.Background()
	if err := p.Activate(ctx, "web", 1, one, "bin/activate", ActivateOptions{Run: true, Following: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	o := ActivateOptions{Run: true, Following: true, CheckTimeout: 10 * time.Second, Checks: []Check{{Rel: "bin/check"}}}
	if err := p.Activate(ctx, "web", 2, two, "bin/activate", o); err != nil {
		t.Fatalf("a check that exits 0 leaving a child behind: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the activation waited %v for the check's child", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err == nil {
		// A zombie until reaped by init counts as gone too.
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z") {
			t.Errorf("the check's child %d still runs", pid)
		}
	}
}

// TestMarksNotWrittenThroughLinks: in a profile directory its user owns,
// links the user placed where the agent once put its temporary files
// lead the agent's writes nowhere: the files they point at are unchanged.
func TestMarksNotWrittenThroughLinks(t *testing.T) {
	s, p := testProfiles(t)
	log := filepath.Join(t.TempDir(), "activations")
	one := treeWithCheck(t, s, "one", log, "exit 0")
	victim := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(victim, []byte("root:secret\n"), 0o600)
	l, _ := p.place("web")
	os.MkdirAll(l.dir(), 0o755)
	for _, kind := range []string{"activation", "highest", "trial", "failed"} {
		os.Symlink(victim, l.mark(kind)+".tmp")
	}
	o := ActivateOptions{Run: true, Following: true, Checks: []Check{{Shell: "false"}}, CheckTimeout: 5 * time.Second}
	p.Activate(context.Background(), "web", 1, one, "bin/activate", o)
	if b, _ := os.ReadFile(victim); string(b) != "root:secret\n" {
		t.Fatalf("a mark was written through a link: the file it points at now holds %q", b)
	}
}

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
	_, p, _, _, _ := killedTrial(t)
	ctx := context.Background()
	two, err := p.Root("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	// The user re-runs it by hand, and it succeeds.
	if err := p.Activate(ctx, "web", 2, two, "bin/activate", ActivateOptions{Run: true}); err != nil {
		t.Fatal(err)
	}
	err = p.Recover(ctx, "web", ActivateOptions{})
	if cur, _ := p.Current("web"); cur != 2 {
		t.Fatalf("Recover undid a successful manual activation: now on %d (%v)", cur, err)
	}
}

// TestAtBootTimesOut: switch-to-configuration boot is bounded by the
// activation timeout.
func TestAtBootTimesOut(t *testing.T) {
	s, p := testProfiles(t)
	root := treeWithSwitch(t, s, "sleep 5")
	start := time.Now()
	err := p.Activate(context.Background(), "nixos", 1, root, "bin/switch-to-configuration",
		ActivateOptions{Run: true, Following: true, AtBoot: true, Timeout: 300 * time.Millisecond})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("switch-to-configuration boot ran %v with a 300ms timeout (err %v)", took, err)
	}
}

// TestRollbackThatCannotSwitchKeepsTrial: a rollback whose switch fails
// keeps the trial mark, so that it is tried again, and does not claim to
// have rolled back.
func TestRollbackThatCannotSwitchKeepsTrial(t *testing.T) {
	_, p, l, _, _ := killedTrial(t)
	ctx := context.Background()
	// generation 1's link is gone (deleted by hand), so there is nothing
	// to switch back to
	os.Remove(l.gen(1))
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
