package agent_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/testnet"
)

// activationLog makes generation files whose activation command appends
// "activated N" to a log file, and reads that log.
type activationLog string

func newActivationLog(t *testing.T) activationLog {
	return activationLog(filepath.Join(t.TempDir(), "activations"))
}

// followingPair starts two connected agents, agent 1 following f of
// agent 0 (Activate and Run set), and a log of the activations.
func followingPair(t *testing.T, f agent.Follow) (*testnet.Net, activationLog) {
	net := testnet.Start(t, 2)
	net.WaitConnected(1)
	f.Activate, f.Run = true, true
	net.FollowWith(1, f)
	return net, newActivationLog(t)
}

// files is a configuration tree whose activation command logs, then runs
// extra (shell).
func (l activationLog) files(version, extra string) map[string]string {
	return map[string]string{
		"etc/version":  version,
		"bin/activate": fmt.Sprintf("#!/bin/sh\necho \"activated $TROVE_GENERATION\" >> %s\n%s\n", l, extra),
	}
}

func (l activationLog) lines() []string {
	b, _ := os.ReadFile(string(l))
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), "activated ", ""))
}

func followStatus(t *testing.T, a *agent.Agent, name string) agent.FollowStatus {
	t.Helper()
	st, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range st.Follows {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("status lists no followed %s: %+v", name, st.Follows)
	return agent.FollowStatus{}
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// waitRounds waits until a's follower of name has decided n more times
// whether to activate (the periodic check wakes it), so that a test can
// assert what it did not do.
func waitRounds(t *testing.T, a *agent.Agent, name string, n uint64) {
	t.Helper()
	from := a.Applied(name)
	waitFor(t, fmt.Sprintf("%d rounds of the %s follower", n, name), 20*time.Second, func() bool { return a.Applied(name) >= from+n })
}

// rollback switches agent i's profile back to gen as `trove rollback
// --to gen --run` does.
func rollback(t *testing.T, a *agent.Agent, name string, gen uint64) {
	t.Helper()
	prof := profile.OpenProfiles(a.Store)
	root, err := prof.Root(name, gen)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := a.History.Get(name, gen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := prof.Activate(ctx, name, gen, root, m.Activate, profile.ActivateOptions{Run: true}); err != nil {
		t.Fatalf("rollback to %d: %v", gen, err)
	}
}

// TestRollbackHolds: after a manual rollback the follower activates only a
// generation newer than any it had, whatever announcements, reconnections
// and periodic checks happen; following with --activate again resumes.
func TestRollbackHolds(t *testing.T) {
	defer agent.SetLearnInterval(200 * time.Millisecond)()
	net, log := followingPair(t, agent.Follow{Name: "laptop"})
	publisher, follower := net.Agent(0), net.Agent(1)
	net.Publish(0, "laptop", log.files("1", ""))
	net.WaitGeneration(1, "laptop", 1)
	net.Publish(0, "laptop", log.files("2", ""))
	net.WaitGeneration(1, "laptop", 2)
	waitFor(t, "generation 2's command runs", 10*time.Second, func() bool { return len(log.lines()) == 2 })

	rollback(t, follower, "laptop", 1)
	if got := strings.Join(log.lines(), " "); got != "1 2 1" {
		t.Fatalf("activations before the hold: %q", got)
	}
	// Generation 2 is announced again, the peers reconnect, and the
	// periodic check runs many times over (every 200ms here).
	m2, _, err := publisher.History.Get("laptop", 2)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := m2.ID()
	if err := publisher.Node.Announce(context.Background(), p2p.Announcement{Name: "laptop", Generation: 2, ID: id[:]}); err != nil {
		t.Fatal(err)
	}
	publisher.Node.Host().Network().ClosePeer(net.ID(1))
	net.WaitConnected(1)
	waitRounds(t, follower, "laptop", 5)
	prof := profile.OpenProfiles(follower.Store)
	if cur, _ := prof.Current("laptop"); cur != 1 {
		t.Fatalf("the follower undid the rollback: profile at generation %d", cur)
	}
	if got := strings.Join(log.lines(), " "); got != "1 2 1" {
		t.Fatalf("activations after the rollback: %q", got)
	}
	st := followStatus(t, follower, "laptop")
	if !st.HeldBack || st.Current != 1 || st.Highest != 2 || st.Newest != 2 || !strings.Contains(st.Hint, "`trove follow laptop --activate --run`") {
		t.Fatalf("status of the held profile: %+v", st)
	}

	// A new generation is newer than any the profile had: it activates.
	net.Publish(0, "laptop", log.files("3", ""))
	net.WaitGeneration(1, "laptop", 3)
	waitFor(t, "generation 3's command runs", 10*time.Second, func() bool { return len(log.lines()) == 4 })
	if st := followStatus(t, follower, "laptop"); st.HeldBack {
		t.Fatalf("still held at the newest: %+v", st)
	}

	// Held again at 2; following with --activate again resumes to 3.
	rollback(t, follower, "laptop", 2)
	// Deleting the generation rolled back from keeps the hold.
	if err := prof.Delete("laptop", 3); err != nil {
		t.Fatal(err)
	}
	waitRounds(t, follower, "laptop", 3)
	if cur, _ := prof.Current("laptop"); cur != 2 {
		t.Fatalf("profile at %d after the second rollback", cur)
	}
	net.FollowWith(1, agent.Follow{Name: "laptop", Activate: true, Run: true})
	net.WaitGeneration(1, "laptop", 3)
	waitFor(t, "generation 3's command runs again", 10*time.Second, func() bool { return len(log.lines()) == 6 })
	if got := strings.Join(log.lines(), " "); got != "1 2 1 3 2 3" {
		t.Fatalf("activations: %q", got)
	}
}

// TestHangingActivation: an activation command that hangs is killed at
// the follower's timeout; meanwhile the follower learns of the next
// generation at once, a manual rollback waits at most the timeout, and the
// next generation activates.
func TestHangingActivation(t *testing.T) {
	const timeout = 3 * time.Second
	net, log := followingPair(t, agent.Follow{Name: "laptop", Timeout: timeout.String()})
	follower := net.Agent(1)
	net.Publish(0, "laptop", log.files("1", ""))
	net.WaitGeneration(1, "laptop", 1)

	// Generation 2's activation hangs.
	net.Publish(0, "laptop", log.files("2", "sleep 400"))
	net.WaitGeneration(1, "laptop", 2)
	waitFor(t, "generation 2's activation starts", 10*time.Second, func() bool { return len(log.lines()) == 2 })
	hungAt := time.Now()

	// Generation 3 is learned of while generation 2's command hangs.
	net.Publish(0, "laptop", log.files("3", ""))
	learned := waitFor(t, "the follower learns of generation 3", 2*time.Second, func() bool {
		return followStatus(t, follower, "laptop").Newest == 3
	})
	t.Logf("learned of generation 3 in %s while an activation hung", learned)

	// It activates once generation 2's command is killed at the timeout.
	net.WaitGeneration(1, "laptop", 3)
	if d := time.Since(hungAt); d > timeout+10*time.Second {
		t.Fatalf("generation 3 activated %s after generation 2's hung", d)
	}
	if !strings.Contains(net.Log(1), "timed out after 3s") {
		t.Fatalf("the timeout was not logged:\n%s", net.Log(1))
	}

	// A manual rollback while generation 4's activation hangs waits for
	// the timeout, not for ever.
	net.Publish(0, "laptop", log.files("4", "sleep 400"))
	waitFor(t, "generation 4's activation starts", 20*time.Second, func() bool { return len(log.lines()) == 4 })
	start := time.Now()
	rollback(t, follower, "laptop", 3)
	if d := time.Since(start); d > timeout+5*time.Second {
		t.Fatalf("the rollback waited %s", d)
	}
	if cur, _ := profile.OpenProfiles(follower.Store).Current("laptop"); cur != 3 {
		t.Fatalf("profile at %d after the rollback", cur)
	}
}

// TestFetchOlderGeneration: an explicit request for an older signed
// generation works once a newer one is known.
func TestFetchOlderGeneration(t *testing.T) {
	net := testnet.Start(t, 2)
	net.WaitConnected(1)
	for v := range 3 {
		net.Publish(0, "laptop", map[string]string{"etc/version": fmt.Sprint(v + 1)})
	}
	a := net.Agent(1)
	ctx := context.Background()
	if m, err := fetch.ResolveManifest(ctx, a.Node, a.History, "laptop", 0); err != nil || m.Generation != 3 {
		t.Fatalf("newest: %v %v", m, err)
	}
	m, err := fetch.ResolveManifest(ctx, a.Node, a.History, "laptop", 2)
	if err != nil || m.Generation != 2 {
		t.Fatalf("generation 2 after 3 is known: %v %v", m, err)
	}
	if _, err := fetch.New(a.Store, a.Node, fetch.Options{Keys: a.Keys}).FetchManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if newest, _, err := a.History.Get("laptop", 0); err != nil || newest.Generation != 3 {
		t.Fatalf("newest after fetching generation 2: %v %v", newest, err)
	}
}

// TestRefusalIsReported: a generation signed by a key not trusted for the
// configuration is refused, and the log and status say why and what to run.
func TestRefusalIsReported(t *testing.T) {
	net := testnet.Start(t, 2)
	net.WaitConnected(1)
	publisher, follower := net.Agent(0), net.Agent(1)
	net.Follow(1, "laptop", true)
	// The publisher signs with a key only it trusts.
	key, err := manifest.GenerateKey("stranger-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := publisher.Keys.Add(key.Public(), "laptop"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cfg")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "motd"), []byte("hello"), 0o644)
	pi, err := publisher.Store.AddTree(context.Background(), dir, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publisher.Publish(context.Background(), key, "laptop", pi.Path, profile.Commands{}); err != nil {
		t.Fatal(err)
	}
	var st agent.FollowStatus
	waitFor(t, "the refusal shows in status", 10*time.Second, func() bool {
		st = followStatus(t, follower, "laptop")
		return st.LastError != ""
	})
	if !strings.Contains(st.LastError, "stranger-1, which is not a trusted key") || !strings.Contains(st.LastError, "trove trust add") {
		t.Fatalf("status: %+v", st)
	}
	if !strings.Contains(st.Hint, "no trusted key may publish laptop") {
		t.Fatalf("hint: %q", st.Hint)
	}
	if !strings.Contains(net.Log(1), "refused a generation") || !strings.Contains(net.Log(1), "stranger-1") {
		t.Fatalf("the refusal was not logged:\n%s", net.Log(1))
	}
	if _, _, err := follower.History.Get("laptop", 0); !errors.Is(err, manifest.ErrUnknown) {
		t.Fatalf("the follower recorded the untrusted generation: %v", err)
	}
}

// TestManualSwitchWhileFollowerWaits: a follower waiting for the profile's
// lock while the user switches by hand (activate 2, roll back to 1) does not
// switch to 2 again when it gets the lock: the hold is checked under it.
func TestManualSwitchWhileFollowerWaits(t *testing.T) {
	net, log := followingPair(t, agent.Follow{Name: "laptop"})
	follower := net.Agent(1)
	net.Publish(0, "laptop", log.files("1", ""))
	net.WaitGeneration(1, "laptop", 1)
	waitFor(t, "generation 1's command runs", 10*time.Second, func() bool { return len(log.lines()) == 1 })

	prof := profile.OpenProfiles(follower.Store)
	ctx := context.Background()
	unlock, err := prof.Lock(ctx, "laptop", func() string { return "trove activate laptop --run" }, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	net.Publish(0, "laptop", log.files("2", ""))
	waitFor(t, "the follower waits for the lock", 20*time.Second, func() bool {
		return strings.Contains(followStatus(t, follower, "laptop").State, "another activation holds the profile (trove activate laptop --run)")
	})
	m2, _, err := follower.History.Get("laptop", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := prof.Switch("laptop", 2, m2.Root); err != nil { // the manual activation of 2
		t.Fatal(err)
	}
	unlock()
	rollback(t, follower, "laptop", 1) // may win the lock, or come second
	waitFor(t, "the follower gives up on generation 2", 10*time.Second, func() bool {
		return followStatus(t, follower, "laptop").State == ""
	})
	if cur, _ := prof.Current("laptop"); cur != 1 {
		t.Fatalf("the follower undid the rollback: profile at %d (activations %q)", cur, log.lines())
	}
	if got := strings.Join(log.lines(), " "); got != "1 1" {
		t.Fatalf("activations: %q, want only the manual rollback's after the first", got)
	}
}

// TestInterruptedActivation: an agent stopped while a follower's activation
// command runs kills the command; after a restart, status says the
// selected generation's activation was cut off and what to run. An
// unfollow, though, lets a running command finish.
func TestInterruptedActivation(t *testing.T) {
	net, log := followingPair(t, agent.Follow{Name: "laptop"})
	started := filepath.Join(t.TempDir(), "started")
	net.Publish(0, "laptop", log.files("1", "touch "+started+"\nsleep 400"))
	waitFor(t, "the activation starts", 20*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
	net.Stop(1)
	net.Restart(1)
	st := followStatus(t, net.Agent(1), "laptop")
	if st.Current != 1 || st.LastActivation == nil || st.LastActivation.Result != profile.ActivationInterrupted ||
		!strings.Contains(st.Hint, "was cut off") || !strings.Contains(st.Hint, "trove activate laptop --generation 1 --run") {
		t.Fatalf("status after the restart: %+v (last activation %+v)", st, st.LastActivation)
	}

	// Generation 2's command takes a moment; unfollowing meanwhile does not
	// cut it off.
	os.Remove(started)
	net.Publish(0, "laptop", log.files("2", "touch "+started+"\nsleep 2\necho finished >> "+string(log)))
	waitFor(t, "generation 2's activation starts", 20*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
	if err := net.Agent(1).SetFollow(context.Background(), agent.Follow{Name: "laptop"}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "generation 2's command finishes", 10*time.Second, func() bool {
		return strings.Contains(strings.Join(log.lines(), " "), "finished")
	})
	// The outcome is recorded once the command has exited, a moment after
	// its last line.
	var rec *profile.ActivationRecord
	var err error
	waitFor(t, "generation 2's activation is recorded", 10*time.Second, func() bool {
		rec, err = profile.OpenProfiles(net.Agent(1).Store).LastActivation("laptop")
		return err == nil && rec != nil && rec.Result != profile.ActivationRunning
	})
	if rec.Generation != 2 || rec.Result != profile.ActivationOK {
		t.Fatalf("last activation after the unfollow: %+v %v", rec, err)
	}
}

// TestBogusAnnouncement: a trust-group peer announcing a generation that
// never comes (here 2^64-1) shows in status only while it is awaited, and
// repeating an announcement costs the follower no new rounds.
func TestBogusAnnouncement(t *testing.T) {
	defer agent.SetAnnounceExpiry(2 * time.Second)()
	net := testnet.Start(t, 3)
	net.WaitConnected(2)
	net.Follow(1, "laptop", false)
	net.Publish(0, "laptop", map[string]string{"etc/version": "1"})
	follower, liar := net.Agent(1), net.Agent(2)
	waitFor(t, "generation 1 is known", 10*time.Second, func() bool { return followStatus(t, follower, "laptop").Newest == 1 })
	for range 50 {
		if err := liar.Node.Announce(context.Background(), p2p.Announcement{Name: "laptop", Generation: math.MaxUint64, ID: make([]byte, 32)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the announcement shows", 5*time.Second, func() bool { return followStatus(t, follower, "laptop").Announced == math.MaxUint64 })
	if n := strings.Count(net.Log(1), "generation=18446744073709551615"); n != 1 {
		t.Fatalf("one generation announced 50 times was logged %d times", n)
	}
	waitFor(t, "the announcement expires", 40*time.Second, func() bool { return followStatus(t, follower, "laptop").Announced == 0 })
}

// TestSilentPeerDoesNotDelayFollowing: a trust-group peer that takes
// manifest requests and never answers does not hold up a generation the
// publisher has.
func TestSilentPeerDoesNotDelayFollowing(t *testing.T) {
	net := testnet.Start(t, 3)
	net.WaitConnected(2)
	net.Agent(2).Node.Host().SetStreamHandler(p2p.ProtoManifest, func(st network.Stream) {
		time.Sleep(time.Minute)
		st.Reset()
	})
	net.FollowWith(1, agent.Follow{Name: "laptop", Activate: true})
	net.Publish(0, "laptop", map[string]string{"etc/version": "1"})
	prof := profile.OpenProfiles(net.Agent(1).Store)
	d := waitFor(t, "generation 1 activates", 30*time.Second, func() bool { c, _ := prof.Current("laptop"); return c == 1 })
	if d > 10*time.Second {
		t.Fatalf("one silent peer delayed following by %s", d)
	}
}

// TestCheckFailsRollsBack: a generation whose published check fails on
// the follower is undone within the check deadline and 5 s: the follower
// is back on the previous generation with its activation run again, the
// failure shows in its status, and the failed generation is not followed
// into again; the next one is.
func TestCheckFailsRollsBack(t *testing.T) {
	const deadline = 3 * time.Second
	net, log := followingPair(t, agent.Follow{Name: "laptop", CheckTimeout: deadline.String()})
	follower := net.Agent(1)
	one := log.files("1", "")
	one["bin/check"] = "#!/bin/sh\nexit 0\n"
	net.Publish(0, "laptop", one)
	waitFor(t, "generation 1 is active", 20*time.Second, func() bool {
		return followStatus(t, follower, "laptop").Phase == agent.PhaseActive
	})
	two := log.files("2", "")
	two["bin/check"] = "#!/bin/sh\necho the service does not answer >&2\nexit 1\n"
	published := time.Now()
	net.Publish(0, "laptop", two)
	var st agent.FollowStatus
	waitFor(t, "generation 2 is rolled back", deadline+15*time.Second, func() bool {
		st = followStatus(t, follower, "laptop")
		return st.Phase == agent.PhaseRolledBack
	})
	took := time.Since(published)
	t.Logf("rolled back %v after publishing; status: %s", took.Round(time.Millisecond), st.Hint)
	if st.Current != 1 || len(st.Failed) != 1 || st.Failed[0].Generation != 2 || !strings.Contains(st.Failed[0].Reason, "the service does not answer") {
		t.Fatalf("after the rollback: current %d, failed %+v", st.Current, st.Failed)
	}
	if got := strings.Join(log.lines(), " "); got != "1 2 1" {
		t.Errorf("activations ran: %q, want generation 1, 2, then 1 again", got)
	}
	if took > deadline+5*time.Second {
		t.Errorf("rolled back %v after publishing, more than the deadline %v + 5 s", took, deadline)
	}
	// Generation 3 is followed as usual.
	three := log.files("3", "")
	three["bin/check"] = "#!/bin/sh\nexit 0\n"
	net.Publish(0, "laptop", three)
	waitFor(t, "generation 3 is active", 20*time.Second, func() bool {
		st = followStatus(t, follower, "laptop")
		return st.Phase == agent.PhaseActive && st.Current == 3
	})
}

// TestCheckedActivationCutOffRollsBack: a trial whose agent is stopped in
// the middle of its checks is undone when the agent starts again.
func TestCheckedActivationCutOffRollsBack(t *testing.T) {
	net, log := followingPair(t, agent.Follow{Name: "laptop", CheckTimeout: "1m"})
	follower := net.Agent(1)
	net.Publish(0, "laptop", log.files("1", ""))
	waitFor(t, "generation 1 is active", 20*time.Second, func() bool {
		return followStatus(t, follower, "laptop").Current == 1
	})
	started := filepath.Join(t.TempDir(), "checking")
	two := log.files("2", "")
	two["bin/check"] = "#!/bin/sh\ntouch " + started + "\nsleep 400\n"
	net.Publish(0, "laptop", two)
	waitFor(t, "generation 2's check runs", 20*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
	net.Stop(1)
	net.Restart(1)
	var st agent.FollowStatus
	waitFor(t, "the trial is undone", 20*time.Second, func() bool {
		st = followStatus(t, net.Agent(1), "laptop")
		return st.Phase == agent.PhaseRolledBack && st.Current == 1
	})
	if got := strings.Join(log.lines(), " "); got != "1 2 1" {
		t.Errorf("activations ran: %q, want generation 1, 2, then 1 again (status: %+v)", got, st)
	}
}

// TestWindowHoldsTheSwitch: a follower whose window is closed fetches the
// new generation at once but does not switch to it; status and the fleet
// view say it is pending.
func TestWindowHoldsTheSwitch(t *testing.T) {
	now := time.Now()
	from, to := now.Add(2*time.Hour), now.Add(3*time.Hour)
	window := from.Format("15:04") + "-" + to.Format("15:04")
	net, log := followingPair(t, agent.Follow{Name: "laptop", When: window})
	follower := net.Agent(1)
	net.Publish(0, "laptop", log.files("1", ""))
	var st agent.FollowStatus
	waitFor(t, "generation 1 waits for the window", 20*time.Second, func() bool {
		st = followStatus(t, follower, "laptop")
		return st.Phase == agent.PhasePending && strings.Contains(st.Pending, window)
	})
	if st.Current != 0 || len(log.lines()) != 0 {
		t.Fatalf("switched outside the window: current %d, activations %v", st.Current, log.lines())
	}
	m, _, err := follower.History.Get("laptop", 1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := follower.Store.IsValid(m.Root); !ok {
		t.Error("the generation was not fetched while waiting for the window")
	}
	waitFor(t, "the publisher's fleet view shows it pending", 10*time.Second, func() bool {
		f := net.Agent(0).Fleet("laptop")
		return len(f.Machines) == 1 && f.Machines[0].Phase == agent.PhasePending && f.Machines[0].Pending != ""
	})
}
