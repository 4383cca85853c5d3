package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/testnet"
)

// nixIn runs a Nix command on the Nix store under root.
func nixIn(t *testing.T, root, name string, args ...string) string {
	t.Helper()
	return string(nixtest.Run(t, name, append([]string{"--store", "local?root=" + root}, args...)...))
}

// TestNixStoresShareAndDeliver: two agents on two Nix stores. A closure
// that Nix puts in the first store after its agent started is published
// from there as it is, and the follower's agent delivers it into the
// second Nix store, where Nix's own tools see valid, verified paths with
// their references, and the configuration's generations are a Nix
// profile. Neither agent keeps a copy of the trees.
func TestNixStoresShareAndDeliver(t *testing.T) {
	nixtest.Require(t)
	closure := nixtest.BuildFixtureClosure(t)
	net := testnet.Start(t, 2, testnet.WithNixStores())
	net.WaitConnected(1)

	// Nix's own import, with no trove command on that machine.
	cmd := nixtest.Command(t, "nix-store", "--store", "local?root="+net.NixRoot(0), "--import")
	cmd.Stdin = bytes.NewReader(nixtest.Run(t, "nix-store", append([]string{"--export"}, closure...)...))
	nixtest.RunCmd(t, cmd)
	top, err := nix.ParsePath(nix.DefaultStoreDir, closure[2])
	if err != nil {
		t.Fatal(err)
	}
	net.Follow(1, "laptop", true)
	net.PublishPath(0, "laptop", top, "")
	net.WaitGeneration(1, "laptop", 1)

	r1 := net.NixRoot(1)
	if out := nixIn(t, r1, "nix-store", "--verify", "--check-contents"); strings.Contains(out, "error") {
		t.Fatalf("nix-store --verify --check-contents: %s", out)
	}
	for _, p := range closure {
		want := nixtest.Run(t, "nix-store", "-q", "--references", p)
		if got := nixIn(t, r1, "nix-store", "-q", "--references", p); got != string(want) {
			t.Errorf("references of %s in the follower's Nix store: %q, want %q", p, got, want)
		}
		want = nixtest.Run(t, "nix-store", "-q", "--hash", p)
		if got := nixIn(t, r1, "nix-store", "-q", "--hash", p); got != string(want) {
			t.Errorf("narHash of %s in the follower's Nix store: %q, want %q", p, got, want)
		}
	}
	profiles := filepath.Join(r1, "nix/var/nix/profiles")
	// As Nix's own: laptop → laptop-1-link → the store path.
	link, err := os.Readlink(filepath.Join(profiles, "laptop"))
	if err != nil {
		t.Fatal(err)
	}
	target, err := os.Readlink(filepath.Join(profiles, link))
	if err != nil || link != "laptop-1-link" || target != closure[2] {
		t.Fatalf("the follower's Nix profile laptop → %s → %s (%v), want laptop-1-link → %s", link, target, err, closure[2])
	}
	gens := string(nixtest.Run(t, "nix-env", "-p", filepath.Join(profiles, "laptop"), "--list-generations"))
	if !strings.Contains(gens, "   1   ") || !strings.Contains(gens, "(current)") {
		t.Fatalf("nix-env --list-generations of the follower's profile:\n%s", gens)
	}
	// The profile is a root of Nix's garbage collector.
	nixIn(t, r1, "nix-store", "--gc")
	if out := nixIn(t, r1, "nix-store", "--check-validity", "--print-invalid", closure[2]); out != "" {
		t.Fatalf("Nix's GC collected the current generation: %s", out)
	}
	for i := range 2 {
		if _, err := os.Stat(filepath.Join(net.Home(i), "store")); err == nil {
			t.Errorf("agent %d keeps a tree directory of its own on Nix's store", i)
		}
	}
}

// TestNixStoreServesNewPathsLive: a path Nix adds to its store while the
// agent runs can be fetched by a peer at once, and so the path Nix deletes
// stops being served.
func TestNixStoreServesNewPathsLive(t *testing.T) {
	nixtest.Require(t)
	net := testnet.Start(t, 2, testnet.WithNixStores())
	net.WaitConnected(1)
	src := filepath.Join(t.TempDir(), "fresh")
	if err := os.WriteFile(src, bytes.Repeat([]byte("fresh bytes from nix\n"), 50000), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	added := strings.TrimSpace(nixIn(t, net.NixRoot(0), "nix-store", "--add", src))
	p, err := nix.ParsePath(nix.DefaultStoreDir, added)
	if err != nil {
		t.Fatal(err)
	}
	// A content-addressed path needs no signature: the follower believes
	// it from its bytes.
	rep := net.Sync(1, p)
	t.Logf("fetched %s %v after Nix added it (%d bytes)", added, time.Since(start), rep.BytesFetched)
	if ok, err := net.Agent(1).Store.IsValid(p); err != nil || !ok {
		t.Fatalf("%s is not valid on the follower after the sync: %v", added, err)
	}
	if out := nixIn(t, net.NixRoot(1), "nix-store", "--verify-path", added); out != "" {
		t.Fatalf("nix-store --verify-path: %s", out)
	}
}
