package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/nix"
)

// TestRelayForTheGroup: a member running the relay service lets two
// members that never dialled each other connect through it and talk
// trove's protocols; a stranger can reserve nothing on it.
func TestRelayForTheGroup(t *testing.T) {
	tr, ta, tb := NewTrustGroup(nil), NewTrustGroup(nil), NewTrustGroup(nil)
	key, _, _ := crypto.GenerateEd25519Key(nil)
	r, err := New(context.Background(), Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: tr, RelayService: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, sa := testNode(t, ta)
	b, _ := testNode(t, tb)
	pair(r, a, tr, ta)
	pair(r, b, tr, tb)
	pair(a, b, ta, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Reserve(ctx, r.AddrInfo()); err != nil {
		t.Fatalf("a member's reservation: %v", err)
	}
	via, err := RelayAddr(r.AddrInfo(), a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(ctx, via); err != nil {
		t.Fatalf("connecting through the relay: %v", err)
	}
	if k := b.ConnKind(a.ID()); k != "relayed" {
		t.Errorf("b's connection to a is %q, want relayed", k)
	}
	for _, st := range b.Peers() {
		if st.ID == a.ID().String() && st.Via != "relayed" {
			t.Errorf("trove peers says a is reached %q, want relayed", st.Via)
		}
	}
	pi := addTree(t, sa, map[string][]byte{"f": []byte("through the relay")})
	has, err := b.Have(ctx, a.ID(), []nix.PathHash{pi.Path.Hash})
	if err != nil || !has[0] {
		t.Fatalf("have over the relayed connection: %v %v", has, err)
	}

	stranger, _ := testNode(t, NewTrustGroup(nil))
	if err := stranger.Reserve(ctx, r.AddrInfo()); err == nil {
		t.Errorf("a stranger reserved on the group's relay")
	}
}

// TestRelayACL: reservations and connections for members only, both ends.
func TestRelayACL(t *testing.T) {
	g := NewTrustGroup(nil)
	m1, m2, out := peer.ID("m1"), peer.ID("m2"), peer.ID("out")
	g.Allow(m1, "m1")
	g.Allow(m2, "m2")
	acl := relayACL{g}
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"a member reserves", acl.AllowReserve(m1, nil), true},
		{"a stranger reserves", acl.AllowReserve(out, nil), false},
		{"member to member", acl.AllowConnect(m1, nil, m2), true},
		{"stranger to member", acl.AllowConnect(out, nil, m1), false},
		{"member to stranger", acl.AllowConnect(m1, nil, out), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
