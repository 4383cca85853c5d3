package p2p

import (
	"context"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
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
	// Once a has identified b it knows b speaks no gossipsub protocol
	// (gossipsub learns it from the same identify event), so only the
	// direct push can reach it. (a refuses c's connection: nothing to wait
	// for there.)
	waitFor(t, 10*time.Second, "a did not identify b", func() bool {
		protos, _ := a.host.Peerstore().SupportsProtocols(b.ID(), ProtoAnnounce)
		return len(protos) == 1
	})
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

// TestAnnounceOnlyFromTrusted: a node that serves anyone (--serve public)
// still takes direct announcements only from its trust group.
func TestAnnounceOnlyFromTrusted(t *testing.T) {
	ta := NewTrustGroup(nil)
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(context.Background(), Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: ta, ServePublic: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	friend, _ := testNode(t, NewTrustGroup(nil))
	stranger, _ := testNode(t, NewTrustGroup(nil))
	ta.Allow(friend.ID(), "friend")
	got := make(chan peer.ID, 4)
	if err := a.Subscribe(context.Background(), "laptop", func(from peer.ID, an Announcement) { got <- from }); err != nil {
		t.Fatal(err)
	}
	an := &Announcement{Name: "laptop", Generation: 3, ID: make([]byte, 32)}
	for _, n := range []*Node{stranger, friend} {
		if err := n.Connect(context.Background(), a.AddrInfo()); err != nil {
			t.Fatal(err)
		}
		if err := n.tellOne(context.Background(), a.ID(), ProtoAnnounce, an); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case from := <-got:
		if from != friend.ID() {
			t.Fatalf("an announcement from %s, not the trusted %s, was taken", from, friend.ID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the trusted peer's announcement did not arrive")
	}
	select {
	case from := <-got:
		t.Fatalf("a second announcement, from %s, was taken", from)
	case <-time.After(300 * time.Millisecond):
	}
}
