package fetch

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// syncChildEnv makes the test binary a process that syncs one closure from
// one seeder and is killed by the test (TestSyncSurvivesKill).
const syncChildEnv = "TROVE_SYNC_CHILD_HOME"

// childWindow is the chunk window of the killed syncs: what a kill may
// waste is bounded by it.
const childWindow = 4

func TestMain(m *testing.M) {
	if home := os.Getenv(syncChildEnv); home != "" {
		if err := syncChild(home); err != nil {
			fmt.Fprintln(os.Stderr, "sync child:", err)
			os.Exit(1)
		}
		fmt.Println("done")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncChild syncs TROVE_SYNC_CHILD_ROOT from TROVE_SYNC_CHILD_SEEDER into
// the store at home, trusting TROVE_SYNC_CHILD_TRUST, with node key
// TROVE_SYNC_CHILD_KEY.
func syncChild(home string) error {
	s, err := store.Open(home, store.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	kb, err := base64.StdEncoding.DecodeString(os.Getenv("TROVE_SYNC_CHILD_KEY"))
	if err != nil {
		return err
	}
	key, err := crypto.UnmarshalPrivateKey(kb)
	if err != nil {
		return err
	}
	pub, err := manifest.ParsePublicKey(os.Getenv("TROVE_SYNC_CHILD_TRUST"))
	if err != nil {
		return err
	}
	kr, err := manifest.LoadKeyring(filepath.Join(home, "trusted-keys"))
	if err != nil {
		return err
	}
	if err := kr.Add(pub); err != nil {
		return err
	}
	root, err := nix.ParseBase(os.Getenv("TROVE_SYNC_CHILD_ROOT"))
	if err != nil {
		return err
	}
	seeder, err := peer.AddrInfoFromString(os.Getenv("TROVE_SYNC_CHILD_SEEDER"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	n, err := p2p.New(ctx, p2p.Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: p2p.NewTrustGroup(nil)})
	if err != nil {
		return err
	}
	defer n.Close()
	if err := n.Connect(ctx, *seeder); err != nil {
		return err
	}
	fmt.Println("ready")
	_, err = New(s, n, Options{Keys: kr, Window: childWindow}).Fetch(ctx, []nix.Path{root})
	return err
}

// received is how many chunk bytes c has had from s.
func received(c, s *peerNode) int64 {
	for _, p := range c.node.Peers() {
		if p.ID == s.node.ID().String() {
			return p.ChunkBytesIn
		}
	}
	return 0
}

// countingStore serves a store, counting the chunks it serves; each takes
// delay, and after block chunks (if > 0) it serves nothing more but
// blocks until the node closes, signalling blocked once.
type countingStore struct {
	*store.Store
	delay   time.Duration
	served  atomic.Int64
	block   atomic.Int64
	blocked chan struct{}
	once    sync.Once
}

func (c *countingStore) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	if b := c.block.Load(); b > 0 && c.served.Load() >= b {
		c.once.Do(func() { close(c.blocked) })
		<-ctx.Done()
		return nil, ctx.Err()
	}
	time.Sleep(c.delay)
	b, err := c.Store.ReadChunk(ctx, id, size)
	if err == nil {
		c.served.Add(1)
	}
	return b, err
}

// TestSyncResumesAfterSeederLeaves: the only seeder goes away after part
// of the chunks arrived. The sync fails saying so, keeps what arrived, and
// a second sync once a seeder is back fetches only the rest.
func TestSyncResumesAfterSeederLeaves(t *testing.T) {
	sk, kr := testKeys(t)
	cs := &countingStore{blocked: make(chan struct{})}
	cs.block.Store(10)
	seeder, paths := seeding(t, sk, 2, 2<<20, 21, func(s *store.Store) p2p.Content { cs.Store = s; return cs })
	c := newNode(t, nodeOpts{})
	connect(t, c, seeder)
	root := paths[len(paths)-1].Path
	opts := Options{Keys: kr, StallTimeout: 2 * time.Second}

	done := fetchInBackground(context.Background(), c, opts, root)
	select {
	case <-cs.blocked:
	case r := <-done:
		t.Fatalf("sync ended before the seeder left: %+v %v", r.rep, r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the seeder was never asked for enough chunks")
	}
	// The seeder reads ahead on each stream: wait until chunks it read
	// have arrived, then take it away.
	waitUntil(t, 10*time.Second, "no chunk arrived from the seeder", func() bool { return received(c, seeder) > 0 })
	seeder.node.Close()
	var r fetched
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("sync did not notice that its only seeder left")
	}
	t.Logf("first sync: %v; report %+v", r.err, r.rep)
	if r.err == nil {
		t.Fatal("sync succeeded without its seeder")
	}
	for _, s := range []string{"no peer left to fetch", "kept", "running the sync again", "resumes"} {
		if !strings.Contains(r.err.Error(), s) {
			t.Errorf("error does not say %q: %v", s, r.err)
		}
	}
	if r.rep.BytesFetched == 0 {
		t.Fatalf("nothing arrived before the seeder left: %+v", r.rep)
	}
	// Leaving is not lying: the departed seeder is not blamed for bad data.
	for _, p := range r.rep.Peers {
		if p.BadData > 0 {
			t.Errorf("the seeder that left was recorded as sending bad data: %+v", p)
		}
	}
	if n := checkNothingCorrupt(t, c.store, paths); n == len(paths) {
		t.Fatal("every path became valid without the seeder")
	}

	// The seeder is back, under a new identity, serving the same store.
	cs.block.Store(0)
	back := newNode(t, nodeOpts{store: cs.Store})
	connect(t, c, back)
	rep, err := New(c.store, c.node, opts).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second sync: %+v", rep)
	if rep.BytesResumed == 0 || rep.BytesFetched >= rep.NarBytes || rep.BytesFetched+rep.BytesResumed+rep.BytesReused != rep.NarBytes {
		t.Fatalf("the second sync did not resume: %+v", rep)
	}
	requireSameClosure(t, cs.Store, c.store, paths)
	requireNoSpool(t, c.home)
}

// TestSyncSurvivesKill kills a syncing process with SIGKILL at random
// points, several times; after each kill its store is consistent, and a
// last sync completes, fetching only what no earlier run kept (at most the
// chunks in flight at each kill are fetched twice).
func TestSyncSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process repeatedly; skipped with -short")
	}
	sk, kr := testKeys(t)
	cs := &countingStore{delay: 2 * time.Millisecond}
	seeder, paths := seeding(t, sk, 10, 2<<20, 31, func(s *store.Store) p2p.Content { cs.Store = s; return cs })
	root := paths[len(paths)-1].Path
	chunks := 0
	for _, pi := range paths {
		ix, err := seeder.store.ChunkIndexOf(pi.Path.Hash)
		if err != nil {
			t.Fatal(err)
		}
		chunks += len(ix)
	}
	addr := seeder.node.AddrInfo()
	seederAddr := fmt.Sprintf("%s/p2p/%s", addr.Addrs[0], addr.ID)

	childKey, _, _ := crypto.GenerateEd25519Key(nil)
	childID, _ := peer.IDFromPrivateKey(childKey)
	kb, _ := crypto.MarshalPrivateKey(childKey)
	seeder.trust.Allow(childID, "child")
	home := t.TempDir()

	r := rand.New(rand.NewPCG(7, 7))
	kills := 0
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			syncChildEnv+"="+home,
			"TROVE_SYNC_CHILD_KEY="+base64.StdEncoding.EncodeToString(kb),
			"TROVE_SYNC_CHILD_TRUST="+sk.Public().String(),
			"TROVE_SYNC_CHILD_ROOT="+root.String(),
			"TROVE_SYNC_CHILD_SEEDER="+seederAddr,
		)
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 4)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		select {
		case l := <-lines:
			if l != "ready" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child said %q", round, l)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child did not start", round)
		}
		// Kill after a random number of chunks (0: while planning), then
		// a random moment more. Six rounds of at most 11 chunks, 10 more
		// while sleeping (two streams) and 6 in flight cannot fetch the
		// ~300 chunks.
		target := cs.served.Load() + int64(r.IntN(12))
		exited, finished := false, false
		deadline := time.Now().Add(20 * time.Second)
	wait:
		for cs.served.Load() < target && time.Now().Before(deadline) {
			select {
			case l, ok := <-lines:
				if !ok || l == "done" {
					exited, finished = true, l == "done"
					break wait
				}
			case <-time.After(time.Millisecond):
			}
		}
		time.Sleep(time.Duration(r.IntN(10_000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		switch {
		case finished:
			t.Fatalf("round %d: the child finished the whole sync before it could be killed; make the closure bigger", round)
		case exited:
			t.Fatalf("round %d: the child exited by itself: %v", round, cmd.ProcessState)
		}
		kills++

		s, err := store.Open(home, store.Options{})
		if err != nil {
			t.Fatalf("round %d: reopening the store after kill -9: %v", round, err)
		}
		valid := checkNothingCorrupt(t, s, paths)
		s.Close()
		t.Logf("round %d: killed after %d chunks served in all; %d of %d paths valid, store consistent", round, cs.served.Load(), valid, len(paths))
	}

	// The last run, in this process.
	servedBefore := cs.served.Load()
	c := newNode(t, nodeOpts{home: home})
	connect(t, c, seeder)
	rep, err := New(c.store, c.node, Options{Keys: kr, Window: childWindow}).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("last sync: %+v", rep)
	requireSameClosure(t, cs.Store, c.store, paths)
	requireNoSpool(t, c.home)
	if rep.BytesFetched+rep.BytesResumed+rep.BytesReused != rep.NarBytes {
		t.Fatalf("fetched %d + resumed %d + reused %d bytes != %d NAR bytes to get", rep.BytesFetched, rep.BytesResumed, rep.BytesReused, rep.NarBytes)
	}
	if rep.BytesResumed == 0 {
		t.Fatalf("the last sync resumed nothing: %+v", rep)
	}
	if fetched := cs.served.Load() - servedBefore; fetched*int64(chunk.MaxSize) < rep.BytesFetched {
		t.Fatalf("the seeder served %d chunks in the last sync, which fetched %d bytes", fetched, rep.BytesFetched)
	}
	// Every chunk was served once, plus at most what was in flight (the
	// window, and one being read on each stream) at each kill.
	if total, most := cs.served.Load(), int64(chunks+kills*(childWindow+maxStreamsPerPeer)); total > most {
		t.Fatalf("the seeder served %d chunks for a closure of %d chunks with %d kills: more than those in flight were fetched again", total, chunks, kills)
	}
	t.Logf("%d chunks served for %d in the closure over %d kills", cs.served.Load(), chunks, kills)
}

// TestSyncSweepsSpoolsOfValidPaths: a spool left next to a path that became
// valid (a kill between registering it and removing its spool) is removed
// by the next sync that fetches anything.
func TestSyncSweepsSpoolsOfValidPaths(t *testing.T) {
	sk, kr := testKeys(t)
	a, c := newPeer(t, nil), newPeer(t, nil)
	paths := closure(t, a.store, sk, 2, 100<<10, 41)
	connect(t, c, a)
	fe := New(c.store, c.node, Options{Keys: kr})
	if _, err := fe.Fetch(context.Background(), []nix.Path{paths[0].Path}); err != nil {
		t.Fatal(err)
	}
	left := spoolPath(filepath.Join(c.home, "partial"), paths[0].Path)
	if err := os.WriteFile(left, make([]byte, paths[0].NarSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fe.Fetch(context.Background(), []nix.Path{paths[1].Path}); err != nil {
		t.Fatal(err)
	}
	requireNoSpool(t, c.home)
}
