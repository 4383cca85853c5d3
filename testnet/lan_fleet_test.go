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
	for i := 1; i <= followers; i++ {
		lan.Trove(i, "trust", "add", pub, "--config", "web")
		args := []string{"follow", "web", "--activate", "--run", "--check-timeout", "8s", "--check", "true"}
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
		script := fmt.Sprintf("#!/bin/sh\ncase \"$TROVE_PROFILE\" in\n%s  *) exit 1;;\nesac\necho %d >> %s/$me\nip link set $dev up\n%s\n", devs.String(), gen, logs, extra)
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
	b, _ := os.ReadFile(filepath.Join(logs, fmt.Sprint(cutOff)))
	if got := strings.Fields(string(b)); strings.Join(got, " ") != "1 2 1" {
		t.Errorf("follower %d's activations: %v, want 1 2 1", cutOff, got)
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
