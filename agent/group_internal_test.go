package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/p2p"
)

// TestKeeperWaitsForStart: the node serves the group protocol from within
// p2p.New, before Start has set the agent's Node. A member's push that
// arrived then dereferenced the nil Node and killed the agent (seen in
// the fanout bench, whose seeder restarts while 16 members push to it).
// The keeper now waits until the agent is started, and does nothing if
// the start failed.
func TestKeeperWaitsForStart(t *testing.T) {
	self, other := peer.ID("self"), peer.ID("other")
	members, err := parseMembers(nil, self)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{members: members, log: slog.New(slog.DiscardHandler), ready: make(chan struct{})}
	addr := ma.StringCast("/ip4/10.0.0.2/tcp/4001")
	done := make(chan any)
	go func() {
		defer func() { done <- recover() }()
		keeper{a}.Receive(other, p2p.GroupUpdate{Addrs: []peer.AddrInfo{{ID: other, Addrs: []ma.Multiaddr{addr}}}})
	}()
	select {
	case r := <-done:
		t.Fatalf("Receive ran before the agent was started (recovered: %v)", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(a.ready) // the start failed: no node, no background context
	if r := <-done; r != nil {
		t.Fatalf("Receive after a failed start: %v", r)
	}
}
