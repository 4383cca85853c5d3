package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestReachMemberThroughRelay: two members that know each other's peer
// ID only, no address, both configured with the group's relay, find each
// other through it.
func TestReachMemberThroughRelay(t *testing.T) {
	defer func(d time.Duration) { relayEvery = d }(relayEvery)
	relayEvery = 100 * time.Millisecond
	start := func(cfg Config) *Agent {
		t.Helper()
		cfg.Home, cfg.Listen, cfg.Logger = tempHome(t), []string{"/ip4/127.0.0.1/tcp/0"}, slog.New(slog.DiscardHandler)
		a, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	r := start(Config{RelayService: true})
	addr := r.Node.AddrInfo().Addrs[0].String() + "/p2p/" + r.Node.ID().String()
	a := start(Config{Relays: []string{addr}})
	b := start(Config{Relays: []string{addr}})
	// Trust by ID alone (not through the group, whose records carry
	// addresses): nothing tells b where a is.
	for _, pair := range [][2]*Agent{{r, a}, {r, b}, {a, b}} {
		for i, x := range pair {
			x.Trust.Allow(pair[1-i].Node.ID(), "m")
		}
	}
	waitUntil(t, "b reaches a through the relay", func() bool { return b.Node.ConnKind(a.Node.ID()) != "" })
	if k := b.Node.ConnKind(a.Node.ID()); k != "relayed" {
		t.Errorf("b reached a %s, want relayed (loopback addresses are not public: no hole punching)", k)
	}

	// The relay restarts (its connections close, and it forgets every
	// reservation): a makes its reservation again at once, not at the
	// 20-minute renewal, and b reaches it through the relay again. (Each
	// forgets the other's addresses, learnt through the relay: otherwise
	// they would meet directly on loopback.)
	for _, p := range []*Agent{a, b} {
		r.Node.Host().Network().ClosePeer(p.Node.ID())
	}
	a.Node.Host().Peerstore().ClearAddrs(b.Node.ID())
	b.Node.Host().Peerstore().ClearAddrs(a.Node.ID())
	waitUntil(t, "b loses a", func() bool { return b.Node.ConnKind(a.Node.ID()) == "" })
	waitUntil(t, "a reserves again and b reaches it through the relay", func() bool {
		return b.Node.ConnKind(a.Node.ID()) == "relayed"
	})
}
