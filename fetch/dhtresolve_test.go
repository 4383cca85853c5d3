package fetch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
)

// manifestBytes serves a history to the manifest protocol.
type manifestBytes struct{ h *manifest.History }

func (m manifestBytes) ManifestBytes(name string, gen uint64) ([]byte, error) {
	_, b, err := m.h.Get(name, gen)
	return b, err
}

// TestResolveManifestThroughDHT: the publisher is not connected to the
// resolver; the resolver finds it by the configuration's name on the DHT
// through a bootstrap node that knows nothing of the configuration.
func TestResolveManifestThroughDHT(t *testing.T) {
	sk, _ := manifest.GenerateKey("laptop-1")
	trust := p2p.NewTrustGroup(nil)
	keys := make([]crypto.PrivKey, 3)
	for i := range keys {
		keys[i], _, _ = crypto.GenerateEd25519Key(nil)
		id, _ := peer.IDFromPrivateKey(keys[i])
		trust.Allow(id, "")
	}
	history := func(home string) *manifest.History {
		kr, err := manifest.LoadKeyring(manifest.TrustedKeysPath(home))
		if err != nil {
			t.Fatal(err)
		}
		kr.Add(sk.Public(), "laptop")
		return manifest.OpenHistory(home, kr)
	}
	// The publisher: a store with a configuration and its manifest.
	pubStore, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pubStore.Close() })
	dir := filepath.Join(t.TempDir(), "cfg")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "motd"), []byte("hello"), 0o644)
	pi, err := pubStore.AddTree(context.Background(), dir, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	pubHistory := history(pubStore.Home())
	if _, _, err := profile.Publish(pubStore, pubHistory, sk, "laptop", pi.Path, profile.Commands{}); err != nil {
		t.Fatal(err)
	}

	start := func(i int, cfg p2p.Config) *p2p.Node {
		cfg.Key, cfg.Trust, cfg.DHT, cfg.Listen = keys[i], trust, true, []string{"/ip4/127.0.0.1/tcp/0"}
		n, err := p2p.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	boot := start(0, p2p.Config{})
	pub := start(1, p2p.Config{Content: pubStore, Manifests: manifestBytes{pubHistory}, Bootstrap: []peer.AddrInfo{boot.AddrInfo()}})
	res := start(2, p2p.Config{Bootstrap: []peer.AddrInfo{boot.AddrInfo()}})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitUntil(t, 20*time.Second, "the publisher cannot provide: its routing table stays empty", func() bool {
		return pub.Provide(ctx, p2p.ConfigKey("laptop")) == nil
	})
	waitUntil(t, 20*time.Second, "the resolver never joined through the bootstrap node", func() bool { return len(res.ConnectedPeers()) > 0 })
	// The resolver's routing table fills a moment after it connects: wait
	// until a lookup can succeed at all, so that the test is about
	// resolving, not about how soon the DHT is ready.
	waitUntil(t, 20*time.Second, "no lookup finds the publisher", func() bool {
		provs, _ := res.FindProviders(ctx, p2p.ConfigKey("laptop"), 1)
		return len(provs) > 0
	})
	// Only the DHT may lead the resolver to the publisher. A DHT query
	// still in flight may dial it again just after the close: close
	// until the two stay apart.
	for i := 0; ; i++ {
		res.Host().Network().ClosePeer(pub.ID())
		pub.Host().Network().ClosePeer(res.ID())
		res.Host().Peerstore().ClearAddrs(pub.ID())
		time.Sleep(50 * time.Millisecond)
		if res.Host().Network().Connectedness(pub.ID()) != network.Connected {
			break
		}
		if i == 20 {
			t.Fatal("the resolver is connected to the publisher before resolving")
		}
	}

	m, err := ResolveManifest(ctx, res, history(t.TempDir()), "laptop", 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Generation != 1 || m.Root != pi.Path {
		t.Fatalf("resolved %s@%d root %s", m.Name, m.Generation, m.Root)
	}
}
