package p2p

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// TestReachability: members dial each other back (AutoNAT v2) on fresh
// connections from identities the gater would refuse but for the check
// in flight. A node whose listen address members reach is public, and an
// address nobody listens on is found unreachable; a node with nothing
// but such an address is private. On loopback, so private addresses are
// checked too (a real node checks only public ones).
func TestReachability(t *testing.T) {
	reachPrivateAddrs, reachRetry = true, 200*time.Millisecond
	t.Cleanup(func() { reachPrivateAddrs, reachRetry = false, 2*time.Second })
	// An address nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	l.Close()

	ta, tb, tc, td := NewTrustGroup(nil), NewTrustGroup(nil), NewTrustGroup(nil), NewTrustGroup(nil)
	a, _ := testNode(t, ta)
	b, _ := testNode(t, tb)
	c, _ := testNode(t, tc)
	// d relays for its group, and says so when it finds itself private.
	var dlog syncBuffer
	dkey, _, _ := crypto.GenerateEd25519Key(nil)
	d, err := New(context.Background(), Config{Key: dkey, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: td, RelayService: true,
		Logger: slog.New(slog.NewTextHandler(&dlog, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if got := a.Reachability(); got != ReachUnknown {
		t.Fatalf("before any check: %s", got)
	}
	for _, x := range []struct {
		n *Node
		t *TrustGroup
	}{{a, ta}, {d, td}} {
		for _, m := range []struct {
			n *Node
			t *TrustGroup
		}{{b, tb}, {c, tc}} {
			pair(x.n, m.n, x.t, m.t)
		}
	}
	// d listens nowhere: all it has is the dead address, as a member saw.
	d.host.Network().(*swarm.Swarm).ListenClose(d.host.Network().ListenAddresses()...)
	a.seen.add(b.ID(), dead, time.Now())
	d.seen.add(b.ID(), dead, time.Now())
	for _, x := range []*Node{a, d} {
		for _, m := range []*Node{b, c} {
			if err := x.Connect(t.Context(), m.AddrInfo()); err != nil {
				t.Fatal(err)
			}
		}
	}
	var listen ma.Multiaddr
	for _, l := range a.host.Network().ListenAddresses() {
		if !isRelayed(l) {
			listen = l
		}
	}
	var r Reachability
	var reached []ma.Multiaddr
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r, reached = a.ReachableAddrs()
		res, ok := a.reach.get(dead)
		if r == ReachPublic && ok && !res.reachable && d.Reachability() == ReachPrivate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a is %s (reached %v; dead address checked %v: %+v), d is %s", r, reached, ok, res, d.Reachability())
		}
	}
	if len(reached) != 1 || !reached[0].Equal(listen) {
		t.Fatalf("a reached at %v, want its listen address %v alone", reached, listen)
	}
	if !strings.Contains(dlog.String(), "this machine relays for its group, but members outside its network cannot dial it") {
		t.Errorf("the private relay did not warn; its log:\n%s", dlog.String())
	}
	// The dial-back strangers are gone once their window passes, and were
	// never members.
	for _, p := range a.host.Network().Peers() {
		if p != b.ID() && p != c.ID() && a.Trusted(p) {
			t.Fatalf("a trusts stranger %s", p)
		}
	}
}

// TestDialBacksAdmittedOnlyWhileChecking: the gater lets a stranger in to
// dial back only while one of the node's own checks is in flight, only
// from a member's machine, and only a few at once.
func TestDialBacksAdmittedOnlyWhileChecking(t *testing.T) {
	member, elsewhere := ma.StringCast("/ip4/11.0.0.2/tcp/40000"), ma.StringCast("/ip4/11.0.0.9/tcp/40000")
	d := dialBacks{fromMember: func(remote ma.Multiaddr) bool { return remote.Equal(member) }}
	ids := make([]peer.ID, maxDialBacks+1)
	for i := range ids {
		k, _, _ := crypto.GenerateEd25519Key(nil)
		ids[i], _ = peer.IDFromPrivateKey(k)
	}
	if d.admit(ids[1], member) {
		t.Fatal("admitted with no check in flight")
	}
	d.begin()
	if d.admit(ids[1], elsewhere) {
		t.Fatal("admitted from a machine no member is on")
	}
	for i := range maxDialBacks {
		if !d.admit(ids[i], member) {
			t.Fatalf("dial-back %d refused", i)
		}
	}
	if d.admit(ids[maxDialBacks], member) {
		t.Fatal("more dial-backs admitted than maxDialBacks")
	}
	if !d.stranger(ids[0]) || d.stranger(ids[maxDialBacks]) {
		t.Fatal("stranger() disagrees with admit()")
	}
	d.end()
	if d.admit(ids[0], member) {
		t.Fatal("admitted after the check ended")
	}
}

// syncBuffer is a buffer a logger may write to from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
