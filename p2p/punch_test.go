package p2p

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestFromListenPort(t *testing.T) {
	listen := []ma.Multiaddr{ma.StringCast("/ip4/0.0.0.0/tcp/4807"), ma.StringCast("/ip4/0.0.0.0/udp/4807/quic-v1")}
	for _, tc := range []struct {
		local string
		want  bool
	}{
		{"/ip4/192.168.1.2/tcp/4807", true},
		{"/ip4/192.168.1.2/udp/4807/quic-v1", true},
		{"/ip4/192.168.1.2/tcp/51234", false},        // an ephemeral port: the NAT maps it apart
		{"/ip4/192.168.1.2/udp/4807", false},         // not the QUIC listener
		{"/ip6/fe80::1/tcp/4807", true},              // the port, whatever the address
		{"/ip4/192.168.1.2/udp/4808/quic-v1", false}, // another port
	} {
		if got := fromListenPort(ma.StringCast(tc.local), listen); got != tc.want {
			t.Errorf("fromListenPort(%s) = %v, want %v", tc.local, got, tc.want)
		}
	}
}

// TestObservedIsBounded: a node keeps what its newest maxObservers
// reporters saw, one address each.
func TestObservedIsBounded(t *testing.T) {
	var o observed
	now := time.Now()
	for i := range maxObservers * 3 {
		p := peer.ID(fmt.Sprintf("peer-%d", i%(maxObservers*2)))
		o.add(p, ma.StringCast(fmt.Sprintf("/ip4/11.0.0.%d/tcp/4807", i%200+1)), now.Add(time.Duration(i)*time.Second))
	}
	if n := len(o.list()); n != maxObservers {
		t.Fatalf("%d observations kept, want %d", n, maxObservers)
	}
	// The newest report of each kept reporter, and only those.
	for i := maxObservers * 2; i < maxObservers*3; i++ {
		p := peer.ID(fmt.Sprintf("peer-%d", i%(maxObservers*2)))
		if ob, ok := o.addrs[p]; !ok || !ob.at.Equal(now.Add(time.Duration(i)*time.Second)) {
			t.Errorf("%s: kept %v, want its report at %d s", p, ob, i)
		}
	}
}
