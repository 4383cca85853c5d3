package testnet_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/testnet/nettest"
)

// TestLANFleetRollout: a publisher and 16 followers in network
// namespaces. Generation 1 rolls out; two followers whose own check
// fails roll back. The publisher's `trove fleet` shows all 16 as they are
// within 10 s of the last activation. Then generation 2's activation
// takes one follower off the network (its link down): with no member
// answering, it rolls back by itself within its check deadline, generation
// 1's activation bringing its link up again, and the publisher sees it.
func TestLANFleetRollout(t *testing.T) {
	const followers = 16
	lan := nettest.StartLAN(t, followers+1)
	pub := strings.TrimSpace(lan.Trove(0, "key", "generate", "rollout"))
	bad := map[int]bool{3: true, 11: true}
	cutOff := 7
	const checkTimeout = 8 * time.Second
	for i := 1; i <= followers; i++ {
		lan.Trove(i, "trust", "add", pub, "--config", "web")
		args := []string{"follow", "web", "--activate", "--run", "--check-timeout", checkTimeout.String(), "--check", "true"}
		if bad[i] {
			args[len(args)-1] = "echo the service is down >&2; false"
		}
		lan.Trove(i, args...)
	}
	// Each generation's activation logs to a file named for the machine
	// (TROVE_PROFILE is under its home), and brings its link up;
	// generation 2's takes machine cutOff's link down.
	logs := t.TempDir()
	os.Chmod(logs, 0o777)
	var devs strings.Builder
	for i := 1; i <= followers; i++ {
		fmt.Fprintf(&devs, "  *%s/*) dev=%s; me=%d;;\n", lan.Home(i), lan.LAN.Dev(i), i)
	}
	publish := func(gen int, extra string) {
		dir := filepath.Join(t.TempDir(), "web")
		os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
		script := fmt.Sprintf("#!/bin/sh\ncase \"$TROVE_PROFILE\" in\n%s  *) exit 1;;\nesac\necho %d $(date +%%s.%%N) >> %s/$me\nip link set $dev up\n%s\n", devs.String(), gen, logs, extra)
		os.WriteFile(filepath.Join(dir, "bin", "activate"), []byte(script), 0o755)
		path := strings.TrimSpace(lan.Trove(0, "add", dir))
		lan.Trove(0, "publish", "web", path, "--activate", "bin/activate")
	}
	fleet := func() agent.Fleet {
		var f agent.Fleet
		if err := json.Unmarshal([]byte(lan.Trove(0, "fleet", "web", "--json")), &f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	counts := func(f agent.Fleet, gen uint64) (running, failed int) {
		for _, g := range f.Generations {
			if g.Generation == gen {
				return g.Running, g.Failed
			}
		}
		return 0, 0
	}

	publish(1, "")
	var f agent.Fleet
	deadline := time.Now().Add(90 * time.Second)
	for {
		f = fleet()
		if r, fl := counts(f, 1); r == followers-len(bad) && fl == len(bad) && len(f.Machines) == followers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet view never showed generation 1 rolled out: %+v", f.Generations)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var last time.Time
	for _, m := range f.Machines {
		if m.LastAt.After(last) {
			last = m.LastAt
		}
	}
	converged := time.Since(last)
	t.Logf("the publisher's fleet view showed all %d followers %v after the last activation", followers, converged.Round(time.Millisecond))
	if converged > 10*time.Second {
		t.Errorf("the fleet view converged %v after the last activation, want within 10 s", converged)
	}
	for _, m := range f.Machines {
		if i := machine(lan, m.ID); bad[i] != (m.Phase == agent.PhaseRolledBack) {
			t.Errorf("follower %d: phase %s", i, m.Phase)
		}
	}

	// Generation 2 cuts follower cutOff off the network.
	publish(2, fmt.Sprintf("[ $me = %d ] && ip link set $dev down\ntrue", cutOff))
	cutID := lan.ID(cutOff)
	deadline = time.Now().Add(90 * time.Second)
	for {
		f = fleet()
		var cut *agent.FleetMachine
		for i := range f.Machines {
			if f.Machines[i].ID == cutID {
				cut = &f.Machines[i]
			}
		}
		if r, _ := counts(f, 2); r == followers-len(bad)-1 && cut != nil && cut.Phase == agent.PhaseRolledBack && cut.Current == 1 {
			t.Logf("the cut-off follower rolled back: %+v", *cut)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off follower never showed rolled back: %+v", f.Machines)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its activations: 1, 2, then 1 again once the deadline passed.
	b, _ := os.ReadFile(filepath.Join(logs, fmt.Sprint(cutOff)))
	var gens []string
	var at []float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var gen string
		var sec float64
		fmt.Sscan(line, &gen, &sec)
		gens, at = append(gens, gen), append(at, sec)
	}
	if strings.Join(gens, " ") != "1 2 1" {
		t.Fatalf("follower %d's activations: %v, want 1 2 1", cutOff, gens)
	}
	took := time.Duration((at[2] - at[1]) * float64(time.Second))
	t.Logf("the cut-off follower ran generation 1's activation again %v after generation 2's", took.Round(time.Millisecond))
	if took > checkTimeout+5*time.Second {
		t.Errorf("rolled back %v after activating, want within the check deadline %v + 5 s", took, checkTimeout)
	}
}

// machine is the index of the agent with peer ID id.
func machine(lan *nettest.LAN, id string) int {
	for i := range lan.N() {
		if lan.ID(i) == id {
			return i
		}
	}
	return -1
}

// TestLANKilledDuringChecks: a follower killed with SIGKILL while
// generation 2's check runs comes back on generation 1, with generation
// 1's activation run again and 2 marked failed: a generation not proven
// healthy does not stay, whatever kills the agent. Killed again in the
// middle of that rollback's activation, it still ends on generation 1.
func TestLANKilledDuringChecks(t *testing.T) {
	lan := nettest.StartLAN(t, 2)
	pub := strings.TrimSpace(lan.Trove(0, "key", "generate", "rollout"))
	lan.Trove(1, "trust", "add", pub, "--config", "web")
	lan.Trove(1, "follow", "web", "--activate", "--run", "--check-timeout", "2m", "--check", "test ! -e "+filepath.Join(t.TempDir(), "never"))
	logs := t.TempDir()
	checking := filepath.Join(logs, "checking")
	publish := func(gen int, script string) {
		dir := filepath.Join(t.TempDir(), "web")
		os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
		os.WriteFile(filepath.Join(dir, "bin", "activate"), []byte(fmt.Sprintf("#!/bin/sh\necho %d >> %s/activations\n%s\n", gen, logs, script)), 0o755)
		os.WriteFile(filepath.Join(dir, "bin", "check"), []byte(fmt.Sprintf("#!/bin/sh\n[ %d = 1 ] && exit 0\ntouch %s\nsleep 600\n", gen, checking)), 0o755)
		path := strings.TrimSpace(lan.Trove(0, "add", dir))
		lan.Trove(0, "publish", "web", path, "--activate", "bin/activate", "--check", "bin/check")
	}
	status := func() agent.FollowStatus {
		st := lan.Status(1)
		for _, f := range st.Follows {
			if f.Name == "web" {
				return f
			}
		}
		return agent.FollowStatus{}
	}
	waitFor := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v (status %+v)", what, d, status())
			}
		}
	}
	// Generation 1's activation hangs once after "slow" appears, so that
	// the rollback can be killed in the middle of it.
	slow, rolling := filepath.Join(logs, "slow"), filepath.Join(logs, "rolling")
	publish(1, fmt.Sprintf("if [ -e %s ]; then rm %s; touch %s; sleep 600; fi", slow, slow, rolling))
	waitFor("generation 1 is active", 60*time.Second, func() bool { st := status(); return st.Current == 1 && st.Phase == agent.PhaseActive })
	publish(2, "")
	waitFor("generation 2's check runs", 60*time.Second, func() bool { _, err := os.Stat(checking); return err == nil })
	lan.Kill(1)
	os.WriteFile(slow, nil, 0o644)
	lan.Restart(1)
	waitFor("the rollback's activation runs", 60*time.Second, func() bool { _, err := os.Stat(rolling); return err == nil })
	lan.Kill(1)
	lan.Restart(1)
	waitFor("generation 2 is rolled back", 60*time.Second, func() bool {
		st := status()
		return st.Phase == agent.PhaseRolledBack && st.Current == 1 && len(st.Failed) == 1 && st.Failed[0].Generation == 2
	})
	// 1, 2, 1 cut off by the second kill, 1 again to the end.
	b, _ := os.ReadFile(filepath.Join(logs, "activations"))
	if got := strings.Join(strings.Fields(string(b)), " "); got != "1 2 1 1" {
		t.Errorf("activations: %q, want 1 2 1 1", got)
	}
}
