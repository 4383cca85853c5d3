package p2p

import (
	"context"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestAnnounceWithoutGossip: an announcement reaches a connected
// trust-group peer even when gossipsub cannot reach it (its gossipsub
// stream failed to open, as happens under load: gossipsub then leaves the
// peer out until it reconnects). A peer outside the trust group gets no
// direct announcement.
func TestAnnounceWithoutGossip(t *testing.T) {
	ta, tb, tc := NewTrustGroup(nil), NewTrustGroup(nil), NewTrustGroup(nil)
	a, _ := testNode(t, ta)
	b, _ := testNode(t, tb)
	c, _ := testNode(t, tc)
	pair(a, b, ta, tb)
	tc.Allow(a.ID(), "a") // c trusts a, but a does not trust c
	for _, n := range []*Node{b, c} {
		for _, proto := range []string{string(pubsub.GossipSubID_v13), string(pubsub.GossipSubID_v12), string(pubsub.GossipSubID_v11), string(pubsub.GossipSubID_v10), string(pubsub.FloodSubID)} {
			n.host.RemoveStreamHandler(protocol.ID(proto))
		}
	}
	got := map[string]chan Announcement{}
	for name, n := range map[string]*Node{"b": b, "c": c} {
		ch := make(chan Announcement, 4)
		got[name] = ch
		if err := n.Subscribe(context.Background(), "laptop", func(from peer.ID, an Announcement) { ch <- an }); err != nil {
			t.Fatal(err)
		}
		if err := n.Connect(context.Background(), a.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // gossipsub gives up on b and c
	want := Announcement{Name: "laptop", Generation: 7, ID: make([]byte, 32)}
	if err := a.Announce(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	select {
	case an := <-got["b"]:
		if an.Name != "laptop" || an.Generation != 7 {
			t.Fatalf("b got %+v", an)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the announcement did not reach b")
	}
	select {
	case an := <-got["c"]:
		t.Fatalf("c, outside a's trust group, got %+v", an)
	case <-time.After(500 * time.Millisecond):
	}
}
