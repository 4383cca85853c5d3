package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
)

// startAgent runs an agent in-process in home, on loopback, as `trove agent` would.
func startAgent(t *testing.T, home string) *agent.Agent {
	t.Helper()
	ag, err := agent.Start(context.Background(), agent.Config{
		Home: home, StoreDir: "/nix/store", Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Runner: agentRunner(func(string) string { return "" }),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	return ag
}

func TestCommandsGoThroughARunningAgent(t *testing.T) {
	home := t.TempDir()
	ag := startAgent(t, home)

	// The store is the agent's: add is forwarded, with a relative path
	// resolved against the caller's directory.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
	wd, _ := os.Getwd()
	os.Chdir(dir)
	out, stderr, code := runTrove(t, home, "add", "hello.txt")
	os.Chdir(wd)
	if code != 0 || out != "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt\n" {
		t.Fatalf("add through the agent: %d %q %q", code, out, stderr)
	}
	if ok, _ := ag.Store.IsValid(mustParse(t, "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")); !ok {
		t.Fatal("the path is not in the agent's store")
	}

	var st agent.Status
	if err := json.Unmarshal([]byte(mustTrove(t, home, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PeerID != ag.Node.ID().String() || st.StorePaths != 1 || len(st.Addrs) == 0 {
		t.Fatalf("status = %+v", st)
	}

	other := startAgent(t, t.TempDir())
	mustTrove(t, home, "peer", "allow", other.Node.ID().String(), "--name", "other")
	if !ag.Trust.Contains(other.Node.ID()) {
		t.Fatal("peer allow did not reach the agent")
	}
	if !strings.Contains(mustTrove(t, home, "peer", "list"), "other") {
		t.Fatal("peer list does not show the new peer")
	}
	var ids struct {
		ID      string `json:"id"`
		Running bool   `json:"agentRunning"`
	}
	json.Unmarshal([]byte(mustTrove(t, home, "id", "--json")), &ids)
	if ids.ID != ag.Node.ID().String() || !ids.Running {
		t.Fatalf("id = %+v", ids)
	}
	if !strings.Contains(mustTrove(t, home, "peers"), "other") {
		t.Fatal("peers does not list the trusted peer")
	}
	mustTrove(t, home, "peer", "remove", other.Node.ID().String())
	if ag.Trust.Contains(other.Node.ID()) {
		t.Fatal("peer remove did not reach the agent")
	}
	// The trust group survives a restart: it is on disk.
	if g, err := agent.LoadTrust(home); err != nil || len(g.Peers()) != 0 {
		t.Fatalf("trust file after remove: %v %v", g, err)
	}
}

func TestPeersNeedsAnAgent(t *testing.T) {
	_, stderr, code := runTrove(t, t.TempDir(), "peers")
	if code != 1 || !strings.Contains(stderr, "no trove agent is running") {
		t.Fatalf("peers without agent: %d %q", code, stderr)
	}
}

func TestPeerAllowWithoutAgentEditsTheFile(t *testing.T) {
	home := t.TempDir()
	id := "12D3KooWGRUVh7dPpXwHmXhHJtJZmPoFgLDbfRPD2Jn9nQoMnKDS"
	mustTrove(t, home, "peer", "allow", id, "--name", "laptop")
	out := mustTrove(t, home, "peer", "list", "--json")
	if !strings.Contains(out, id) || !strings.Contains(out, "laptop") {
		t.Fatalf("peer list --json = %s", out)
	}
	if _, stderr, code := runTrove(t, home, "peer", "allow", "not-a-peer-id"); code != 2 || !strings.Contains(stderr, "not a peer ID") {
		t.Fatalf("bad peer ID: %d %q", code, stderr)
	}
}

func mustParse(t *testing.T, base string) store.Path {
	t.Helper()
	p, err := store.ParseBase(base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
