package testnet_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/testnet"
	"github.com/trove-p2p/trove/testnet/nettest"
)

// groupIDs is what `trove group list --json` on agent i shows: the
// members' peer IDs, sorted.
func groupIDs(t *testing.T, lan *nettest.LAN, i int) []string {
	t.Helper()
	var ms []agent.Member
	if err := json.Unmarshal([]byte(lan.Trove(i, "group", "list", "--json")), &ms); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// addFile adds a small file to agent i's store and returns its store path.
func addFile(t *testing.T, lan *nettest.LAN, i int, words string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hello-from-agent"+string(rune('0'+i)))
	if err := os.WriteFile(f, []byte(strings.Repeat("agent "+string(rune('0'+i))+" says "+words+"\n", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(lan.Trove(i, "add", f))
}

// chunkBytesOut is how much store data agent i has served to peer id.
func chunkBytesOut(t *testing.T, lan *nettest.LAN, i int, id string) int64 {
	t.Helper()
	var ps []p2p.PeerStatus
	if err := json.Unmarshal([]byte(lan.Trove(i, "peers", "--json")), &ps); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.ID == id {
			return p.ChunkBytesOut
		}
	}
	return 0
}

// A room paired by one invite and one join per machine, in network
// namespaces: agents 1–3 join agent 0's group with a three-use token;
// every pair then trusts, connects to and fetches from each other, and
// group list agrees everywhere. Used, expired and garbage tokens get a
// clear refusal and change nothing; a member removed by another is
// dropped by every member within seconds and gets no bytes; agent 4,
// never invited, gets none either.
func TestLANGroupInviteJoinRemove(t *testing.T) {
	lan := nettest.StartLAN(t, 5, testnet.WithoutPairing())
	tok := strings.TrimSpace(lan.Trove(0, "invite", "--uses", "3"))
	if !strings.HasPrefix(tok, "trove1-") {
		t.Fatalf("trove invite printed %q", tok)
	}
	if log, _ := os.ReadFile(lan.Log(0)); strings.Contains(string(log), tok[7:]) {
		t.Fatal("the agent logged the token")
	}
	for i := 1; i <= 3; i++ {
		out := lan.Trove(i, "join", tok, "--name", "agent"+string(rune('0'+i)))
		t.Logf("agent%d: %s", i, strings.TrimSpace(out))
	}
	start := time.Now()
	for i := range 4 {
		lan.WaitPeers(i, 3)
	}
	t.Logf("all four connected %v after the last join", time.Since(start))
	want := groupIDs(t, lan, 0)
	if len(want) != 4 {
		t.Fatalf("agent0's group has %d members, want 4: %v", len(want), want)
	}
	for i := 1; i < 4; i++ {
		if got := groupIDs(t, lan, i); !slices.Equal(got, want) {
			t.Errorf("agent%d's group %v, agent0's %v", i, got, want)
		}
	}
	// Every pair fetches from each other: each adds a path, the others sync it.
	paths := make([]string, 4)
	for i := range 4 {
		paths[i] = addFile(t, lan, i, "hello")
	}
	for i := range 4 {
		for j := range 4 {
			if i != j {
				lan.Trove(j, "sync", paths[i])
			}
		}
	}

	// Refusals: a used-up token, an expired one, garbage. Agent 4 knows
	// agent 0's address from the tokens, as a stranger who saw them would.
	refused := func(token, want string) {
		t.Helper()
		_, err := lan.LAN.Trove(4, "join", token)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("joining with %s: %v; want a refusal saying %q", want, err, want)
		}
		// The error holds the command line; what trove said comes after.
		if _, said, _ := strings.Cut(err.Error(), "exit status"); len(token) > 30 && strings.Contains(said, token[10:30]) {
			t.Errorf("the refusal shows the token: %s", said)
		}
		if ids := groupIDs(t, lan, 4); len(ids) != 0 {
			t.Fatalf("a refused join left agent 4 with a group: %v", ids)
		}
	}
	refused(tok, "already used (3 of 3 uses)")
	short := strings.TrimSpace(lan.Trove(0, "invite", "--expires", "1s"))
	time.Sleep(1500 * time.Millisecond)
	refused(short, "expired")
	refused("trove1-thisisnotatoken", "not a valid trove invitation")
	for i := range 4 {
		if got := groupIDs(t, lan, i); !slices.Equal(got, want) {
			t.Fatalf("after the refusals agent%d's group is %v, want %v", i, got, want)
		}
	}
	// The stranger gets no bytes: nor by syncing from agent 0 directly.
	from := "/ip4/" + lan.Addr(0) + "/tcp/4807/p2p/" + lan.ID(0)
	if _, err := lan.LAN.Trove(4, "sync", "--from", from, paths[0]); err == nil {
		t.Fatal("a never-invited machine synced from a member")
	}
	if n := chunkBytesOut(t, lan, 0, lan.ID(4)); n != 0 {
		t.Fatalf("agent 0 served %d bytes to a never-invited machine", n)
	}

	// agent 1 removes agent 3; every member drops it within seconds.
	lan.Trove(1, "group", "remove", "agent3")
	start = time.Now()
	for i := range 3 {
		for connectedTo(t, lan, i, lan.ID(3)) || connectedTo(t, lan, 3, lan.ID(i)) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("agent%d and the removed agent3 are still connected after %v", i, time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	took := time.Since(start)
	t.Logf("the removal reached every member and closed its connections in %v", took)
	if took > 5*time.Second {
		t.Errorf("the removal took %v to take effect everywhere; want seconds", took)
	}
	for i := range 3 {
		if got := groupIDs(t, lan, i); len(got) != 3 || slices.Contains(got, lan.ID(3)) {
			t.Errorf("agent%d's group after the removal: %v", i, got)
		}
	}
	// It stays out, and gets no bytes: not by syncing a path it lacks.
	fresh := addFile(t, lan, 0, "something new")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := lan.Run(ctx, 3, "sync", "--from", from, fresh); err == nil {
		t.Fatal("a removed member synced from a member")
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for i := range 3 {
			if connectedTo(t, lan, i, lan.ID(3)) {
				t.Fatalf("agent%d is connected to the removed agent3 again", i)
			}
		}
	}
	for i := range 3 {
		if n := chunkBytesOut(t, lan, i, lan.ID(3)); n > 0 {
			t.Logf("agent%d served agent3 %d bytes, all before its removal", i, n)
		}
	}
}

// connectedTo reports whether agent i lists peer id as connected.
func connectedTo(t *testing.T, lan *nettest.LAN, i int, id string) bool {
	t.Helper()
	var ps []p2p.PeerStatus
	if err := json.Unmarshal([]byte(lan.Trove(i, "peers", "--json")), &ps); err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ps, func(p p2p.PeerStatus) bool { return p.ID == id && p.Connected })
}
