package nixdaemon

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
)

const storeDir = nix.DefaultStoreDir

// requireDaemon skips (or fails, with TROVE_REQUIRE_NIX=1) without Nix.
func requireDaemon(t testing.TB) {
	t.Helper()
	nixtest.RequireDaemon(t)
}

// The transports a test store is reached by: a private `nix-daemon
// --stdio` per client (Start), or the socket of a nix-daemon listening for
// the test (Dial), as on a multi-user install.
const (
	stdio  = "stdio"
	socket = "socket"
)

var transports = []string{stdio, socket}

// testStore is a private chroot store served by `nix-daemon --stdio`, or
// by a listening nix-daemon.
type testStore struct {
	root   string // the chroot: the store is root/nix/store
	uri    string
	socket string // the listening daemon's, "" for --stdio
}

// newTestStore makes a store reached by --stdio.
func newTestStore(t testing.TB) *testStore { return newTestStoreOver(t, stdio) }

// newTestStoreOver makes a store reached by transport.
func newTestStoreOver(t testing.TB, transport string) *testStore {
	t.Helper()
	requireDaemon(t)
	nixtest.Isolate(t)
	root := t.TempDir()
	t.Cleanup(func() { nix.RemoveTree(root) })
	s := &testStore{root: root, uri: "local?root=" + root}
	if transport == socket {
		s.socket = nixtest.StartDaemon(t, root).Socket
	}
	return s
}

// client connects to the store: starts a daemon on it, or dials its
// daemon. It is closed when the test ends.
func (s *testStore) client(t testing.TB, o Options) *Client {
	t.Helper()
	if o.Log == nil {
		o.Log = testLog(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *Client
	var err error
	if s.socket != "" {
		c, err = Dial(ctx, s.socket, o)
	} else {
		c, err = Start(ctx, s.uri, o)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nix runs a Nix command on the store.
func (s *testStore) nix(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	return nixtest.Run(t, name, append([]string{"--store", s.uri}, args...)...)
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// tree is a file tree to add: relative path → contents; a "@" prefix
// makes a symlink, a "!" prefix an executable.
type tree map[string]string

func (tr tree) write(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	for rel, content := range tr {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case len(content) > 0 && content[0] == '@':
			err = os.Symlink(content[1:], p)
		case len(content) > 0 && content[0] == '!':
			err = os.WriteFile(p, []byte(content[1:]), 0o755)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sourceInfo returns the content-addressed PathInfo of the tree at dir
// and its NAR, as `nix-store --add` would make it (but with refs).
func sourceInfo(t testing.TB, dir, name string, refs []nix.Path) (*nix.PathInfo, string) {
	t.Helper()
	nar := filepath.Join(t.TempDir(), "nar")
	f, err := os.Create(nar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := nix.DumpNAR(f, dir); err != nil {
		t.Fatal(err)
	}
	h, size, err := nix.HashPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nix.MakeSourcePath(storeDir, h, name, refs, false)
	if err != nil {
		t.Fatal(err)
	}
	return &nix.PathInfo{
		Path: p, NarHash: h, NarSize: uint64(size), References: nix.SortRefs(refs),
		CA: "fixed:r:" + h.String(),
	}, nar
}

// add adds the NAR file nar with info.
func add(ctx context.Context, c *Client, info *nix.PathInfo, nar string, dontCheckSigs bool) error {
	f, err := os.Open(nar)
	if err != nil {
		return err
	}
	defer f.Close()
	return c.AddToStoreNar(ctx, info, f, dontCheckSigs)
}

// randomFile writes n random bytes to a new file in dir/name.
func randomFile(t testing.TB, dir string, n int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "random"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		rand.Read(buf[:k])
		if _, err := f.Write(buf[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

func mustPath(t testing.TB, s string) nix.Path {
	t.Helper()
	p, err := nix.ParseBase(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
