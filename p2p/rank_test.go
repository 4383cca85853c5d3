package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestRankDials(t *testing.T) {
	const (
		lanTCP  = "/ip4/192.168.1.7/tcp/4807"
		lanQUIC = "/ip4/192.168.1.7/udp/4807/quic-v1"
		loTCP   = "/ip4/127.0.0.1/tcp/4807"
		loQUIC  = "/ip4/127.0.0.1/udp/4807/quic-v1"
		pubTCP  = "/ip4/1.2.3.4/tcp/4807"
		pubQUIC = "/ip4/1.2.3.4/udp/4807/quic-v1"
		lanWS   = "/ip4/192.168.1.7/tcp/4808/ws"
	)
	const (
		ulaTCP   = "/ip6/fd12::7/tcp/4807"
		v6QUIC   = "/ip6/2a01:4f8::7/udp/4807/quic-v1"
		v6TCP    = "/ip6/2a01:4f8::7/tcp/4807"
		lanTCP2  = "/ip4/10.0.0.7/tcp/4807"
		lanQUIC2 = "/ip4/10.0.0.7/udp/4807/quic-v1"
	)
	for _, tc := range []struct {
		name  string
		addrs []string
		first string                   // dialed first (delay 0)
		later map[string]time.Duration // dialed at least so long after
	}{
		{"lan: tcp before quic", []string{lanQUIC, lanTCP}, lanTCP, map[string]time.Duration{lanQUIC: lanQUICDelay}},
		{"loopback: tcp before quic", []string{loQUIC, loTCP}, loTCP, map[string]time.Duration{loQUIC: lanQUICDelay}},
		{"public: quic first, as libp2p", []string{pubTCP, pubQUIC}, pubQUIC, nil},
		{"lan quic alone: at once", []string{lanQUIC}, lanQUIC, nil},
		{"websocket is not tcp", []string{lanQUIC, lanWS}, lanQUIC, nil},
		{"lan tcp first, public ipv4 quic as libp2p", []string{pubQUIC, lanQUIC, pubTCP, lanTCP}, lanTCP,
			map[string]time.Duration{lanQUIC: lanQUICDelay}},
		{"loopback tcp says nothing of ipv6 quic", []string{loTCP, loQUIC, v6QUIC}, v6QUIC,
			map[string]time.Duration{loQUIC: lanQUICDelay}},
		{"dual-stack lan: global ipv6 quic waits for tcp", []string{lanQUIC, lanTCP, ulaTCP, v6QUIC, v6TCP}, "",
			map[string]time.Duration{lanQUIC: lanQUICDelay, v6QUIC: publicQUICWait}},
		{"two lan tcp addresses: staggered as libp2p does", []string{lanTCP, lanTCP2, lanQUIC, lanQUIC2}, "",
			map[string]time.Duration{lanQUIC: lanQUICDelay, lanQUIC2: lanQUICDelay}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []ma.Multiaddr
			for _, s := range tc.addrs {
				addrs = append(addrs, ma.StringCast(s))
			}
			ranked := rankDials(addrs)
			if len(ranked) != len(addrs) {
				t.Fatalf("ranked %d addresses of %d", len(ranked), len(addrs))
			}
			delay := map[string]time.Duration{}
			for i, r := range ranked {
				if i > 0 && r.Delay < ranked[i-1].Delay {
					t.Fatalf("not in order of delay: %v", ranked)
				}
				delay[r.Addr.String()] = r.Delay
			}
			if ranked[0].Delay != 0 || !isTCP(ranked[0].Addr) && tc.first == "" {
				t.Fatalf("first dial %v after %v, want a TCP address at once", ranked[0].Addr, ranked[0].Delay)
			}
			if d, ok := delay[tc.first]; tc.first != "" && (!ok || d != 0) {
				t.Fatalf("%s: delay %v, want 0 (ranked %v)", tc.first, d, ranked)
			}
			for a, least := range tc.later {
				if delay[a] < least {
					t.Errorf("%s: delay %v, want at least %v", a, delay[a], least)
				}
			}
		})
	}
}

// Two nodes on loopback that listen on both transports connect over TCP.
func TestLANConnectsOverTCP(t *testing.T) {
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	both := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	a, _ := testNode(t, ta, both...)
	b, _ := testNode(t, tb, both...)
	pair(a, b, ta, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	for _, c := range a.Host().Network().ConnsToPeer(b.ID()) {
		if !isTCP(c.RemoteMultiaddr()) {
			t.Errorf("connected over %s, want TCP", c.RemoteMultiaddr())
		}
	}
}
