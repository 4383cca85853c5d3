package testnet_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/testnet"
	"github.com/trove-p2p/trove/testnet/nettest"
)

// A follower serves the chunks of a path it is still fetching: agent 1
// syncs a 16 MiB path from seeder 0 (on a 16 Mbit/s link) and is cut off
// from it part way, so the path stays in its spool, uncommitted; agent 2
// then syncs the same path and must get what agent 1 holds from agent 1,
// learned from its have messages, the rest from the seeder. Before
// chunk-level swarming a follower served only committed paths, and agent
// 2 got nothing from agent 1.
func TestLANFollowerServesPathInProgress(t *testing.T) {
	const size = 16 << 20
	lan := nettest.StartLAN(t, 3)
	lan.Shape(0, testnet.Link{Rate: 16_000_000})
	dir := t.TempDir()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{14})
	r.Read(data)
	file := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSpace(lan.Trove(0, "add", file))
	lan.WaitConnected(2)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := lan.Run(ctx, 1, "sync", "--json", path)
		first <- err
	}()
	// Cut agent 1 off from the seeder once it has about a third.
	deadline := time.Now().Add(time.Minute)
	for uploaded(t, lan, 0) < size/3 {
		if time.Now().After(deadline) {
			t.Fatalf("the seeder uploaded %d bytes in a minute", uploaded(t, lan, 0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	lan.Partition(0, 1)
	held := uploaded(t, lan, 0)
	t.Logf("agent 1 cut off from the seeder after %d of %d bytes", held, size)

	out, err := lan.Run(ctx, 2, "sync", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Peers []struct {
			ID           string `json:"id"`
			BytesFetched int64  `json:"bytesFetched"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("sync printed %q: %v", out, err)
	}
	var fromFollower int64
	for _, p := range rep.Peers {
		if p.ID == lan.ID(1) {
			fromFollower = p.BytesFetched
		}
	}
	t.Logf("agent 2 got %d bytes from agent 1, which held about %d uncommitted", fromFollower, held)
	if fromFollower < size/5 {
		t.Errorf("agent 2 got %d bytes from agent 1, which held about %d of the path in progress; want most of them: %s", fromFollower, held, out)
	}
	// Agent 1 may fail (its seeder went while chunks nobody else held
	// were missing) or complete from agent 2: either is right.
	cancel()
	<-first
	lan.Heal(0, 1)
}

// uploaded is how many chunk bytes agent i has sent to its peers.
func uploaded(t *testing.T, lan *nettest.LAN, i int) int64 {
	t.Helper()
	var peers []struct {
		ChunkBytesOut int64 `json:"chunkBytesOut"`
	}
	if err := json.Unmarshal([]byte(lan.Trove(i, "peers", "--json")), &peers); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range peers {
		n += p.ChunkBytesOut
	}
	return n
}

// On a slow link a sync asks for compressed chunks, and a closure of real
// source files crosses it in a fraction of its size: agent 0's link is
// shaped to 20 Mbit/s, and agent 1 syncs a copy of
// Go's net package source (about 5 MB of text, which zstd shrinks 3–4×).
func TestLANCompressesOnSlowLink(t *testing.T) {
	src := filepath.Join(runtime.GOROOT(), "src", "net")
	if _, err := os.Stat(src); err != nil {
		t.Skipf("no Go source tree at %s", src)
	}
	lan := nettest.StartLAN(t, 2)
	lan.Shape(0, testnet.Link{Rate: 20_000_000})
	path := strings.TrimSpace(lan.Trove(0, "add", src))
	var info []struct {
		NarSize int64 `json:"narSize"`
	}
	if err := json.Unmarshal([]byte(lan.Trove(0, "path-info", "--json", path)), &info); err != nil || len(info) != 1 {
		t.Fatalf("path-info: %v", err)
	}
	lan.WaitConnected(1)
	_, tx0, err := lan.LinkBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	lan.Trove(1, "sync", path)
	_, tx1, err := lan.LinkBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	sent := tx1 - tx0
	t.Logf("NAR %d bytes; the seeder's link carried %d (%.2f×)", info[0].NarSize, sent, float64(sent)/float64(info[0].NarSize))
	if sent > info[0].NarSize*6/10 {
		t.Errorf("the seeder's link carried %d bytes for a %d-byte NAR of source text: not compressed", sent, info[0].NarSize)
	}
	lan.Trove(1, "verify", path)
}
