package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/store"
)

// startNode starts a node on loopback TCP with cfg's Key, Listen and Trust
// filled in when unset.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Key == nil {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Key = k
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestDHTFindsProviderThroughOthers: eleven agents with the DHT on form a
// chain, each bootstrapping from the one before it only. The first provides
// a closure root. A twelfth agent, bootstrapped from the middle of the
// chain and not connected to the provider, finds it with FindProviders and
// then asks it `have` over the address the DHT gave.
//
// Nothing beyond Config.Bootstrap is needed: a DHT node in server mode
// joins its bootstrap peer's routing table when identify completes, and
// Provide and FindProviders walk the chain by iterative lookups.
func TestDHTFindsProviderThroughOthers(t *testing.T) {
	const chain = 11
	start := time.Now()
	keys := make([]crypto.PrivKey, chain+1)
	trust := NewTrustGroup(nil)
	for i := range keys {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		id, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		trust.Allow(id, "")
	}
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root := addTree(t, s, map[string][]byte{"bin/hello": []byte("hello")})

	nodes := make([]*Node, chain+1)
	for i := range chain {
		cfg := Config{Key: keys[i], Trust: trust, DHT: true}
		if i == 0 {
			cfg.Content = s
		} else {
			cfg.Bootstrap = []peer.AddrInfo{nodes[i-1].AddrInfo()}
		}
		nodes[i] = startNode(t, cfg)
	}
	waitRT := func(n *Node) {
		waitFor(t, 5*time.Second, "a DHT routing table stays empty", func() bool { return n.dht.RoutingTable().Size() > 0 })
	}
	for _, n := range nodes[:chain] {
		waitRT(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	provider := nodes[0]
	key := PathKey(root.Path.Hash)
	if err := provider.Provide(ctx, key); err != nil {
		t.Fatal(err)
	}
	t.Logf("chain of %d up and root provided after %v", chain, time.Since(start).Round(time.Millisecond))

	finder := startNode(t, Config{Key: keys[chain], Trust: trust, DHT: true, Bootstrap: []peer.AddrInfo{nodes[chain/2].AddrInfo()}})
	waitRT(finder)
	// The finder's own routing-table refresh may have dialled the provider
	// already; cut that so the only way to the provider is the DHT. A
	// refresh still in flight may dial it again just after the close:
	// close until the two stay apart.
	for i := 0; ; i++ {
		finder.Host().Network().ClosePeer(provider.ID())
		provider.Host().Network().ClosePeer(finder.ID())
		finder.Host().Peerstore().ClearAddrs(provider.ID())
		time.Sleep(50 * time.Millisecond)
		if finder.Host().Network().Connectedness(provider.ID()) != network.Connected {
			break
		}
		if i == 20 {
			t.Fatal("the finder is connected to the provider before looking it up")
		}
	}

	t0 := time.Now()
	found, err := finder.FindProviders(ctx, key, 1)
	if err != nil {
		t.Fatalf("FindProviders: %v", err)
	}
	t.Logf("FindProviders took %v; %d nodes in the finder's routing table", time.Since(t0).Round(time.Millisecond), finder.dht.RoutingTable().Size())
	if len(found) != 1 || found[0].ID != provider.ID() || len(found[0].Addrs) == 0 {
		t.Fatalf("found %v, want the provider %s with its addresses", found, provider.ID())
	}
	t1 := time.Now()
	nctx, ncancel := context.WithTimeout(ctx, 5*time.Second)
	defer ncancel()
	if got, err := finder.FindProviders(nctx, PathKey(nix.PathHash{1}), 1); len(got) != 0 {
		t.Fatalf("a key nobody provides found %v, %v", got, err)
	}
	t.Logf("a fruitless lookup took %v", time.Since(t1).Round(time.Millisecond))
	finder.Host().Network().ClosePeer(provider.ID())
	finder.Host().Peerstore().ClearAddrs(provider.ID())
	if err := finder.Connect(ctx, found[0]); err != nil {
		t.Fatalf("connecting to the provider at the addresses the DHT gave: %v", err)
	}
	have, err := finder.Have(ctx, provider.ID(), []nix.PathHash{root.Path.Hash})
	if err != nil || !have[0] {
		t.Fatalf("have from the provider found on the DHT: %v, %v", have, err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the DHT test took %v", d)
	}
}
