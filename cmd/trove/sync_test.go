package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSyncBetweenTwoAgents(t *testing.T) {
	homeA, homeB := t.TempDir(), t.TempDir()
	a, b := startAgent(t, homeA), startAgent(t, homeB)
	if err := a.Allow(b.Node.ID(), "b"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "cfg", "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "cfg", "etc", "motd"), []byte(strings.Repeat("welcome\n", 50000)), 0o644)
	path := strings.TrimSpace(mustTrove(t, homeA, "add", filepath.Join(dir, "cfg")))

	from := a.Node.Host().Addrs()[0].String() + "/p2p/" + a.Node.ID().String()
	out := mustTrove(t, homeB, "sync", "--json", "--from", from, path)
	var rep struct {
		PathsFetched int   `json:"pathsFetched"`
		BytesFetched int64 `json:"bytesFetched"`
		NarBytes     int64 `json:"narBytes"`
		Peers        []struct {
			ID           string `json:"id"`
			BytesFetched int64  `json:"bytesFetched"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("sync --json printed %q: %v", out, err)
	}
	if rep.PathsFetched != 1 || rep.BytesFetched != rep.NarBytes || len(rep.Peers) != 1 || rep.Peers[0].ID != a.Node.ID().String() {
		t.Fatalf("report %+v", rep)
	}
	if got := mustTrove(t, homeB, "path-info", path); got != path+"\n" {
		t.Fatalf("path-info on B: %q", got)
	}
	// Nothing left to do; the plain summary says so.
	if out := mustTrove(t, homeB, "sync", path); !strings.Contains(out, "nothing to fetch") {
		t.Fatalf("second sync printed %q", out)
	}
}

func TestSyncWithoutPeersSaysWhatToDo(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config.toml"), []byte("[agent]\nmdns = false\n"), 0o644)
	_, stderr, code := runTrove(t, home, "sync", "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
	if code != 1 || !strings.Contains(stderr, "--from") {
		t.Fatalf("sync without peers: %d %q", code, stderr)
	}
}

func TestTrustAndKeyCommands(t *testing.T) {
	home := t.TempDir()
	pub := strings.TrimSpace(mustTrove(t, home, "key", "generate", "laptop-1"))
	if !strings.HasPrefix(pub, "laptop-1:") {
		t.Fatalf("key generate printed %q", pub)
	}
	if fi, err := os.Stat(filepath.Join(home, "keys", "laptop-1.secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file: %v %v", fi, err)
	}
	if _, _, code := runTrove(t, home, "key", "generate", "laptop-1"); code != 1 {
		t.Fatal("key generate overwrote an existing secret key")
	}
	mustTrove(t, home, "trust", "add", pub)
	if got := mustTrove(t, home, "trust", "list"); got != pub+"\n" {
		t.Fatalf("trust list = %q", got)
	}
	if _, stderr, code := runTrove(t, home, "trust", "add", "laptop-2:short"); code != 2 || !strings.Contains(stderr, "base64") {
		t.Fatalf("bad key: %d %q", code, stderr)
	}
	mustTrove(t, home, "trust", "remove", "laptop-1")
	if got := mustTrove(t, home, "trust", "list", "--json"); got != "[]\n" {
		t.Fatalf("trust list --json after remove = %q", got)
	}
}
