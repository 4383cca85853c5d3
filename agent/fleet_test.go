package agent_test

import (
	"slices"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/testnet"
)

// TestFleetShowsRollout: a publisher and three followers, one of which has
// a check that fails. Within 10 s of publishing, the publisher's fleet
// view shows two machines on generation 2, the third rolled back to 1
// with 2 failed, and the counts per generation say so. A machine that
// stops is marked stale, the others are not.
func TestFleetShowsRollout(t *testing.T) {
	defer agent.SetFleetTimes(300*time.Millisecond, 3*time.Second)()
	net := testnet.Start(t, 4)
	net.WaitConnected(3)
	log := newActivationLog(t)
	for i := 1; i <= 3; i++ {
		f := agent.Follow{Name: "web", Activate: true, Run: true, CheckTimeout: "5s"}
		if i == 3 {
			f.Check = "exit 1"
		}
		net.FollowWith(i, f)
	}
	net.Publish(0, "web", log.files("1", ""))
	for i := 1; i <= 2; i++ {
		net.WaitGeneration(i, "web", 1)
	}
	publisher := net.Agent(0)
	// Generation 1 had no published check, but machine 3's own fails: it
	// is rolled back from 1 to nothing. Wait until the fleet has settled.
	waitFor(t, "the fleet view shows the three followers", 15*time.Second, func() bool {
		return len(publisher.Fleet("web").Machines) == 3
	})
	two := log.files("2", "")
	two["bin/check"] = "#!/bin/sh\nexit 0\n"
	published := time.Now()
	net.Publish(0, "web", two)
	var f agent.Fleet
	want := map[uint64][3]int{2: {2, 1, 0}}
	waitFor(t, "the publisher sees the rollout of generation 2", 10*time.Second, func() bool {
		f = publisher.Fleet("web")
		for _, g := range f.Generations {
			if w, ok := want[g.Generation]; ok && [3]int{g.Running, g.Failed, g.NotYet} == w {
				return true
			}
		}
		return false
	})
	t.Logf("the publisher saw the rollout %v after publishing: %+v", time.Since(published).Round(time.Millisecond), f.Generations)
	bad := net.Agent(3).Node.ID().String()
	for _, m := range f.Machines {
		switch {
		case m.ID == bad:
			if m.Phase != agent.PhaseRolledBack || !slices.Contains(m.Failed, 2) || m.Current == 2 {
				t.Errorf("the machine whose check fails: %+v", m)
			}
		case m.Current != 2 || m.Phase != agent.PhaseActive || m.Stale:
			t.Errorf("a healthy machine: %+v", m)
		}
	}
	// Machine 2 goes away: marked stale once silent for longer than
	// fleetStale, while those still heard from are not.
	gone := net.Agent(2).Node.ID().String()
	net.Stop(2)
	waitFor(t, "the stopped machine is marked stale", 15*time.Second, func() bool {
		for _, m := range publisher.Fleet("web").Machines {
			if m.ID == gone {
				return m.Stale
			}
		}
		return false
	})
	for _, m := range publisher.Fleet("web").Machines {
		if m.ID != gone && m.Stale {
			t.Errorf("a machine still running is marked stale: %+v", m)
		}
	}
}
