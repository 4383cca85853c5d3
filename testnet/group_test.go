package testnet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/testnet"
)

// waitFor polls cond until it holds, failing after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

// In-process agents on loopback, paired with nobody: one invites, three
// join with one call each, and every agent trusts every other and
// connects to it; then one member removes another, and everyone drops it.
func TestGroupJoinAndRemoveInProcess(t *testing.T) {
	net := testnet.Start(t, 4, testnet.WithoutPairing())
	a := net.Agents()
	tokStr, _, err := a[0].Invite(3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := group.ParseToken(tokStr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i < 4; i++ {
		if _, err := a[i].JoinGroup(ctx, tok, "agent"+string(rune('0'+i))); err != nil {
			t.Fatalf("agent %d joining: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "every agent trusting and connected to the other three", func() bool {
		for i := range a {
			if len(a[i].Trust.Peers()) != 3 || len(a[i].Node.ConnectedPeers()) != 3 {
				return false
			}
		}
		return true
	})
	// A fourth use of a three-use token.
	extra := testnet.Start(t, 1, testnet.WithoutPairing()).Agent(0)
	_, err = extra.JoinGroup(ctx, tok, "late")
	var re *p2p.JoinRefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "already used (3 of 3") {
		t.Fatalf("a used-up token: %v", err)
	}
	if len(extra.Trust.Peers()) != 0 || a[0].Trust.Contains(extra.Node.ID()) {
		t.Fatal("a refused join changed a trust group")
	}
	// agent 1 removes agent 3: all others drop it and close its connections.
	if _, err := a[1].Remove(net.ID(3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every member dropping agent 3", func() bool {
		for i := range 3 {
			if a[i].Trust.Contains(net.ID(3)) || a[i].Node.Host().Network().Connectedness(net.ID(3)) == 2 {
				return false
			}
		}
		return true
	})
	for i := range 3 {
		if n := len(a[i].GroupMembers()); n != 3 {
			t.Errorf("agent %d lists %d members, want 3: %+v", i, n, a[i].GroupMembers())
		}
	}
}
