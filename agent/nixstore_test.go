package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
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
	// It exits 1, failing the test, if a path's contents do not match.
	nixIn(t, r1, "nix-store", "--verify", "--check-contents")
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

// startNixAgent runs an agent on the Nix store under root.
func startNixAgent(t *testing.T, root string, cache agent.CacheConfig) *agent.Agent {
	t.Helper()
	kind, err := store.ParseKind(store.BackendNix, "local?root="+root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.Start(context.Background(), agent.Config{
		Home: t.TempDir(), StoreDir: nix.DefaultStoreDir, Kind: kind, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Cache: cache,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// dirBytes is the disk a directory tree takes.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNixSubstituterWithoutCopy: Nix substituting from the cache endpoint
// of an agent on its own store gets a path the agent fetches from a peer,
// and the path then exists once, in Nix's store; the agent's home keeps
// no copy of it.
func TestNixSubstituterWithoutCopy(t *testing.T) {
	nixtest.Require(t)
	r0, r1 := t.TempDir(), t.TempDir()
	seeder := startNixAgent(t, r0, agent.CacheConfig{})
	cache := startNixAgent(t, r1, agent.CacheConfig{Listen: "127.0.0.1:0", FromPeers: true, Timeout: 5 * time.Second})
	if err := seeder.Allow(cache.Node.ID(), "cache"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Allow(seeder.Node.ID(), "seeder"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Node.Connect(context.Background(), seeder.Node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "payload")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	added := strings.TrimSpace(nixIn(t, r0, "nix-store", "--add", src))
	before := dirBytes(t, cache.Home)
	// Nix asks for the narinfo, at which the agent delivers the path into
	// Nix's store; Nix then finds it valid and downloads no NAR (its
	// --debug log names every URL it downloads).
	cmd := nixtest.Command(t, "nix-store", "--store", "local?root="+r1, "-r", added,
		"--option", "substituters", "http://"+cache.CacheAddr().String(), "--option", "require-sigs", "false", "--debug")
	combined, err := cmd.CombinedOutput()
	out := string(combined)
	if err != nil {
		t.Fatalf("nix-store -r: %v\n%s", err, out)
	}
	if !strings.Contains(out, ".narinfo") {
		t.Fatalf("nix-store -r did not ask the cache for the narinfo (is --debug still logging downloads?):\n%s", out)
	}
	if strings.Contains(out, "/nar/") {
		t.Fatalf("Nix downloaded the NAR too, so the path was sent twice:\n%s", out)
	}
	if out := nixIn(t, r1, "nix-store", "--verify-path", added); out != "" {
		t.Fatalf("nix-store --verify-path: %s", out)
	}
	if grew := dirBytes(t, cache.Home) - before; grew > int64(len(data))/4 {
		t.Fatalf("the cache agent's home grew by %d bytes serving a %d-byte path to Nix", grew, len(data))
	}
}

// TestNixStoreFollowsIntoProfilePath: a follower whose configuration's
// profile was given another path (trove follow --profile) activates each
// generation there, as nix-env -p PATH would, and not in Nix's profiles
// directory, and status says where it is.
func TestNixStoreFollowsIntoProfilePath(t *testing.T) {
	nixtest.Require(t)
	net := testnet.Start(t, 2, testnet.WithNixStores())
	net.WaitConnected(1)
	src := filepath.Join(t.TempDir(), "cfg")
	if err := os.WriteFile(src, []byte("a configuration for "+t.Name()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	added := strings.TrimSpace(nixIn(t, net.NixRoot(0), "nix-store", "--add", src))
	top, err := nix.ParsePath(nix.DefaultStoreDir, added)
	if err != nil {
		t.Fatal(err)
	}
	prof := filepath.Join(t.TempDir(), "state", "laptop")
	if err := profile.OpenProfiles(net.Agent(1).Store).Record("laptop", prof); err != nil {
		t.Fatal(err)
	}
	net.Follow(1, "laptop", true)
	net.PublishPath(0, "laptop", top, "")
	net.WaitGeneration(1, "laptop", 1)

	if link, err := os.Readlink(prof); err != nil || link != "laptop-1-link" {
		t.Fatalf("%s → %q (%v), want laptop-1-link", prof, link, err)
	}
	if _, err := os.Lstat(filepath.Join(net.NixRoot(1), "nix/var/nix/profiles/laptop")); err == nil {
		t.Fatal("the follower also made the profile in Nix's profiles directory")
	}
	gens := string(nixtest.Run(t, "nix-env", "--store", "local?root="+net.NixRoot(1), "-p", prof, "--list-generations"))
	if !strings.Contains(gens, "   1   ") || !strings.Contains(gens, "(current)") {
		t.Fatalf("nix-env --list-generations -p %s:\n%s", prof, gens)
	}
	st, err := net.Agent(1).FollowStatuses()
	if err != nil || len(st) != 1 || st[0].Profile != prof {
		t.Fatalf("follow status %+v (%v), want profile %s", st, err, prof)
	}
}
