package nixcache_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/agent"
)

// startAgent runs an agent on loopback, with its binary cache as cfg says
// (on a free loopback port when cfg.Listen is "auto").
func startAgent(t testing.TB, cfg agent.CacheConfig) *agent.Agent {
	t.Helper()
	if cfg.Listen == "auto" {
		cfg.Listen = "127.0.0.1:0"
	}
	a, err := agent.Start(context.Background(), agent.Config{
		Home: t.TempDir(), StoreDir: nix.DefaultStoreDir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Cache: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// pair makes a and b trust each other and connects them.
func pair(t testing.TB, a, b *agent.Agent) {
	t.Helper()
	if err := a.Allow(b.Node.ID(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Allow(a.Node.ID(), "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Node.Connect(context.Background(), a.Node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

func cacheURL(a *agent.Agent) string { return "http://" + a.CacheAddr().String() }

// TestServeFromPeers: an agent's cache serves what its peer has, fetched on
// demand; what no peer has, or nothing trusted vouches for, is a quick 404.
func TestServeFromPeers(t *testing.T) {
	a := startAgent(t, agent.CacheConfig{})
	key := newKey(t, "b-cache-1")
	b := startAgent(t, agent.CacheConfig{Listen: "auto", FromPeers: true, Key: &key, Timeout: 3 * time.Second})
	pair(t, a, b)
	if a.CacheAddr() != nil {
		t.Fatal("an agent without --cache-listen serves a cache")
	}

	// Content-addressed: believable without a signature.
	pi, nar := addTree(t, a.Store, "shared", 300<<10)
	resp, body := get(t, "GET", cacheURL(b)+"/"+pi.Path.Hash.String()+".narinfo")
	if resp.StatusCode != 200 {
		t.Fatalf("narinfo of a path the peer has: %d %q", resp.StatusCode, body)
	}
	if ok, _ := b.Store.IsValid(pi.Path); !ok {
		t.Fatal("the path was not fetched into the cache agent's store")
	}
	if resp, body := get(t, "GET", cacheURL(b)+"/"+narURLOf(pi)); resp.StatusCode != 200 || !bytes.Equal(body, nar) {
		t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(body))
	}

	// A NAR asked for first (the path missing) is fetched too.
	pi2, nar2 := addTree(t, a.Store, "shared-2", 1000)
	if resp, body := get(t, "GET", cacheURL(b)+"/"+narURLOf(pi2)); resp.StatusCode != 200 || !bytes.Equal(body, nar2) {
		t.Fatalf("NAR of a missing path: %d, %d bytes", resp.StatusCode, len(body))
	}

	// Nobody has it: 404, without waiting for the timeout.
	start := time.Now()
	resp, _ = get(t, "GET", cacheURL(b)+"/"+strings.Repeat("3", 32)+".narinfo")
	if took := time.Since(start); resp.StatusCode != 404 || took > 2*time.Second {
		t.Fatalf("a path no peer has: %d after %s", resp.StatusCode, took)
	}

	// The peer has it, but it is input-addressed and unsigned: nothing B
	// trusts vouches for it, so B cannot serve it.
	scratch := openStore(t)
	tmp, tmpNAR := addTree(t, scratch, "unsigned", 1000)
	p, _ := nix.MakePath(a.Store.StoreDir(), "output:out", tmp.NarHash, "unsigned")
	if _, err := a.Store.AddNAR(context.Background(), &nix.PathInfo{Path: p, NarHash: tmp.NarHash}, bytes.NewReader(tmpNAR)); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, "GET", cacheURL(b)+"/"+p.Hash.String()+".narinfo"); resp.StatusCode != 404 {
		t.Fatalf("an untrusted path: %d %q", resp.StatusCode, body)
	}
	if ok, _ := b.Store.IsValid(p); ok {
		t.Fatal("the untrusted path became valid")
	}
}

// TestServeFromPeersWithoutPeers: with no peer connected, a miss is an
// immediate 404.
func TestServeFromPeersWithoutPeers(t *testing.T) {
	b := startAgent(t, agent.CacheConfig{Listen: "auto", FromPeers: true})
	start := time.Now()
	resp, err := http.Get(cacheURL(b) + "/" + strings.Repeat("4", 32) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 404 || took > time.Second {
		t.Fatalf("%d after %s", resp.StatusCode, took)
	}
}
