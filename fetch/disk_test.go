package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// smallDisk mounts a tmpfs of size bytes on a new directory, for tests of
// a full disk. Mounting needs root: the test is skipped, visibly, without.
func smallDisk(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for a full disk")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs for a full disk: %v", err)
	}
	// Registered before the store's cleanups, so it runs after them.
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// resizeDisk changes the size of a tmpfs from smallDisk.
func resizeDisk(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatal(err)
	}
}

// diskUsage is the bytes allocated to the files under root.
func diskUsage(root string) int64 {
	var n int64
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

// gatedStore serves a store's chunks until after chunks have been served,
// then says so on reached and serves the next only once open is closed.
type gatedStore struct {
	*store.Store
	after   int64
	served  chan struct{}
	reached chan struct{}
	open    chan struct{}
}

func newGate(after int64) *gatedStore {
	return &gatedStore{after: after, served: make(chan struct{}, after), reached: make(chan struct{}), open: make(chan struct{})}
}

func (g *gatedStore) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	select {
	case g.served <- struct{}{}:
	default:
		select {
		case <-g.reached:
		default:
			close(g.reached)
		}
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Store.ReadChunk(ctx, id, size)
}

// TestSyncRefusesWhatCannotFit: on a 50 MiB disk, a sync of a 64 MiB
// closure fails at once, saying how much it needs and where, and leaves
// nothing on disk (it used to fail the same way after preallocating 48 MB
// of spools that nothing reclaimed). With the disk grown, the sync runs.
func TestSyncRefusesWhatCannotFit(t *testing.T) {
	disk := smallDisk(t, 50<<20)
	sk, kr := testKeys(t)
	a := newPeer(t, nil)
	paths := closure(t, a.store, sk, 4, 16<<20, 51)
	c := newNode(t, nodeOpts{home: disk})
	connect(t, c, a)
	root := paths[len(paths)-1].Path
	before := diskUsage(disk)

	rep, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root})
	t.Logf("sync on a 50 MiB disk: %v", err)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("sync of 64 MiB on a 50 MiB disk: %v, want a NoSpaceError", err)
	}
	if ns.Need < 64<<20 || ns.Dir != c.home || !strings.Contains(err.Error(), c.home) || !strings.Contains(err.Error(), "free at least") {
		t.Errorf("the error does not say how much is needed where and what to do: %+v: %v", ns, err)
	}
	if rep.BytesFetched != 0 {
		t.Errorf("fetched %d bytes that cannot fit", rep.BytesFetched)
	}
	if grew := diskUsage(disk) - before; grew > 1<<20 {
		t.Errorf("the failed sync left %d bytes on disk", grew)
	}
	if n := diskUsage(filepath.Join(c.home, "partial")); n != 0 {
		t.Errorf("the failed sync left %d bytes of spools", n)
	}

	resizeDisk(t, disk, 100<<20)
	if _, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root}); err != nil {
		t.Fatalf("sync once the disk has room: %v", err)
	}
	requireSameClosure(t, a.store, c.store, paths)
	requireNoSpool(t, c.home)
}

// TestSyncDiskFillsMidway: the disk fills up while a sync runs (something
// else took the space). The sync fails saying how much more it needs and
// where, keeps what it fetched, and once the space is freed a retry
// resumes and completes.
func TestSyncDiskFillsMidway(t *testing.T) {
	disk := smallDisk(t, 64<<20)
	sk, kr := testKeys(t)
	gate := newGate(40)
	a, paths := seeding(t, sk, 4, 8<<20, 52, func(s *store.Store) p2p.Content { gate.Store = s; return gate })
	c := newNode(t, nodeOpts{home: disk})
	connect(t, c, a)
	root := paths[len(paths)-1].Path

	done := fetchInBackground(context.Background(), c, Options{Keys: kr}, root)
	select {
	case <-gate.reached:
	case r := <-done:
		t.Fatalf("sync ended before the gate: %+v %v", r.rep, r.err)
	}
	filler := filepath.Join(disk, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 1<<20); ; {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	close(gate.open)
	r := <-done
	t.Logf("sync on a disk that filled up: %v", r.err)
	var ns *NoSpaceError
	if !errors.As(r.err, &ns) || ns.Err == nil || ns.Dir != c.home || !strings.Contains(r.err.Error(), "free at least") {
		t.Fatalf("sync on a disk that filled up: %v, want a NoSpaceError naming %s", r.err, c.home)
	}
	if r.rep.BytesFetched == 0 {
		t.Fatalf("nothing was fetched before the disk filled: %+v", r.rep)
	}

	os.Remove(filler)
	rep, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatalf("sync after freeing space: %v", err)
	}
	t.Logf("retry: %+v", rep)
	if rep.BytesResumed == 0 && rep.PathsFetched == len(paths) {
		t.Errorf("the retry resumed nothing: %+v", rep)
	}
	requireSameClosure(t, gate.Store, c.store, paths)
	requireNoSpool(t, c.home)
}

// TestSyncPeakDisk: a sync fits on a disk with room for its closure plus
// its largest path (and a little for the store's database), whatever
// order its paths arrive in: paths unpacked before their references are
// valid hold their NAR twice, and the sync keeps what is so held within
// the largest path.
func TestSyncPeakDisk(t *testing.T) {
	const n, size = 8, 4 << 20
	disk := smallDisk(t, (n+1)*size+8<<20)
	sk, kr := testKeys(t)
	a := newPeer(t, nil)
	paths := closure(t, a.store, sk, n, size, 53)
	root := paths[len(paths)-1].Path
	for i := range 3 {
		home := filepath.Join(disk, fmt.Sprint(i))
		c := newNode(t, nodeOpts{home: home})
		connect(t, c, a)
		if _, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root}); err != nil {
			t.Fatalf("sync %d of %d MiB on a disk of %d MiB: %v", i, n*size>>20, ((n+1)*size+8<<20)>>20, err)
		}
		requireSameClosure(t, a.store, c.store, paths)
		c.node.Close()
		c.store.Close()
		os.RemoveAll(home)
	}
}

// TestSpoolsTakeOnlyWhatArrivedAndGCTakesStoppedOnes: the spools of a
// running sync take disk only for the chunks that arrived, and
// CollectSpools leaves them to it; once the sync has stopped,
// CollectSpools removes them and says how much disk they took, and a
// later sync fetches everything again.
func TestSpoolsTakeOnlyWhatArrivedAndGCTakesStoppedOnes(t *testing.T) {
	sk, kr := testKeys(t)
	gate := newGate(10)
	a, paths := seeding(t, sk, 3, 4<<20, 54, func(s *store.Store) p2p.Content { gate.Store = s; return gate })
	c := newNode(t, nodeOpts{})
	connect(t, c, a)
	root := paths[len(paths)-1].Path
	dir := DefaultSpoolDir(c.store)
	ctx, cancel := context.WithCancel(context.Background())
	done := fetchInBackground(ctx, c, Options{Keys: kr}, root)
	<-gate.reached
	waitUntil(t, 10*time.Second, "the first chunks never arrived", func() bool { return received(c, a) >= 10*chunk.MinSize })
	used := diskUsage(dir)
	t.Logf("spools of a sync that has fetched %d bytes of %d: %d bytes of disk", received(c, a), 3*(4<<20), used)
	if used > 4<<20 {
		t.Errorf("the spools of a sync that fetched ten chunks take %d bytes", used)
	}
	res, err := CollectSpools(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 0 || res.InUse != len(paths) {
		t.Errorf("CollectSpools during the sync: %+v, want %d in use", res, len(paths))
	}
	cancel()
	close(gate.open)
	if err := (<-done).err; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sync: %v", err)
	}

	res, err = CollectSpools(dir, true)
	if err != nil || res.Removed != len(paths) || res.BytesFreed == 0 {
		t.Fatalf("CollectSpools --dry-run after the sync stopped: %+v, %v", res, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != len(paths) {
		t.Fatalf("a dry run removed spools: %d left", len(ents))
	}
	res, err = CollectSpools(dir, false)
	if err != nil || res.Removed != len(paths) || res.InUse != 0 || res.BytesFreed == 0 || res.BytesFreed > 4<<20 {
		t.Fatalf("CollectSpools after the sync stopped: %+v, %v", res, err)
	}
	requireNoSpool(t, c.home)
	rep, err := New(c.store, c.node, Options{Keys: kr}).Fetch(context.Background(), []nix.Path{root})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BytesResumed != 0 {
		t.Errorf("resumed %d bytes from spools that were removed", rep.BytesResumed)
	}
	requireSameClosure(t, gate.Store, c.store, paths)
}

// TestSpoolHeldByAnotherSync: a second sync of a path whose spool another
// sync holds gets a private spool that nothing else sees, and neither
// disturbs the other's bytes; once the first lets go, the spool can be
// opened, resumed and collected again.
func TestSpoolHeldByAnotherSync(t *testing.T) {
	dir := t.TempDir()
	p, _ := nix.ParseBase(strings.Repeat("2", 32) + "-shared")
	first, fresh, err := openSpool(dir, p, 1<<20)
	if err != nil || !fresh || first.path == "" {
		t.Fatalf("first openSpool: %+v %v %v", first, fresh, err)
	}
	second, fresh, err := openSpool(dir, p, 1<<20)
	if err != nil || !fresh || second.path != "" {
		t.Fatalf("openSpool of a held spool: %+v %v %v, want a private one", second, fresh, err)
	}
	if err := first.writeAt([]byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	if err := second.writeAt([]byte("other"), 0); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the private spool is visible: %d entries", len(ents))
	}
	if res, err := CollectSpools(dir, false); err != nil || res.Removed != 0 || res.InUse != 1 {
		t.Errorf("CollectSpools while held: %+v %v", res, err)
	}
	second.remove()
	first.close()
	again, fresh, err := openSpool(dir, p, 1<<20)
	if err != nil || fresh || again.path == "" {
		t.Fatalf("openSpool after the first let go: %+v %v %v, want the named spool to resume", again, fresh, err)
	}
	b := make([]byte, 5)
	again.f.ReadAt(b, 0)
	if string(b) != "first" {
		t.Errorf("the spool holds %q, want what the first sync wrote", b)
	}
	again.close()
	if res, err := CollectSpools(dir, false); err != nil || res.Removed != 1 || res.InUse != 0 {
		t.Errorf("CollectSpools once let go: %+v %v", res, err)
	}
}
