package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/store"
)

// nixAdd adds a file of data to the Nix store under root with Nix's own
// nix-store --add, and returns its path.
func nixAdd(t *testing.T, root string, name string, data []byte) nix.Path {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--add", src)))
	p, err := nix.ParsePath(nix.DefaultStoreDir, out)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// openNixAt opens a store, in a fresh home, on the Nix store under root.
func openNixAt(t testing.TB, root string) *store.Store {
	t.Helper()
	kind, err := store.ParseKind(store.BackendNix, "local?root="+root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(t.TempDir(), store.Options{Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestNixStoreFollowsNix: the store answers from Nix as Nix is now: a path
// Nix adds is valid and indexed by the next Reindex, a path Nix deletes is
// forgotten and its chunks are no longer read, and a path served is a
// temporary root that Nix's collector leaves alone.
func TestNixStoreFollowsNix(t *testing.T) {
	nixtest.Require(t)
	root := t.TempDir()
	s := openNixAt(t, root)
	kept := nixAdd(t, root, "kept", bytes.Repeat([]byte("kept\n"), 100000))
	gone := nixAdd(t, root, "gone", bytes.Repeat([]byte("gone\n"), 100000))
	unread := nixAdd(t, root, "unread", bytes.Repeat([]byte("unread\n"), 100000))

	st, err := s.Reindex(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Paths != 3 || st.Indexed != 3 || st.NARBytes == 0 {
		t.Fatalf("first Reindex: %+v, want 3 paths indexed", st)
	}
	if st, _ := s.Reindex(context.Background(), 2); st.Indexed != 0 {
		t.Fatalf("second Reindex indexed %d paths again", st.Indexed)
	}
	ixGone, err := s.ChunkIndexOf(gone.Hash)
	if err != nil {
		t.Fatal(err)
	}

	// Serving kept makes it a temporary root: Nix's GC keeps it.
	if err := s.WriteNAR(context.Background(), io.Discard, kept, 0, -1); err != nil {
		t.Fatal(err)
	}
	nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--delete", gone.Abs(nix.DefaultStoreDir), unread.Abs(nix.DefaultStoreDir))
	nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--gc")
	if ok, err := s.IsValid(kept); err != nil || !ok {
		t.Fatalf("Nix's GC collected a path being served (valid %v, %v)", ok, err)
	}
	if ok, _ := s.IsValid(gone); ok {
		t.Fatal("a path Nix deleted is still valid")
	}
	if _, err := s.ReadChunk(context.Background(), ixGone[0].ID, ixGone[0].Size); !errors.Is(err, nix.ErrNotValid) {
		t.Fatalf("reading a chunk of a deleted path: %v, want ErrNotValid", err)
	}
	// The read forgot gone; the next round forgets unread.
	if st, _ := s.Reindex(context.Background(), 2); st.Dropped != 1 || st.Paths != 1 {
		t.Fatalf("Reindex after the deletions: %+v, want 1 path and 1 dropped", st)
	}
}

// TestNixStoreErrors: what a user sees when the Nix store cannot be used.
// TestNixStoreRemembered: a home made on a Nix store opens on that store
// when a later command names none, not on the machine's.
func TestNixStoreRemembered(t *testing.T) {
	nixtest.Require(t)
	home, root := t.TempDir(), t.TempDir()
	kind, err := store.ParseKind(store.BackendNix, "local?root="+root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(home, store.Options{Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, k := range []store.Kind{{}, {Backend: store.BackendNix}} {
		s, err := store.Open(home, store.Options{Kind: k})
		if err != nil {
			t.Fatalf("opening with %+v: %v", k, err)
		}
		p := nix.Path{Hash: nix.PathHash{1}, Name: "x"}
		if got, want := s.TreePath(p), filepath.Join(root, "nix/store", p.String()); s.Backend() != store.BackendNix || got != want {
			t.Errorf("opened with %+v: backend %s, trees at %s, want nix and %s", k, s.Backend(), got, want)
		}
		s.Close()
	}
}

func TestNixStoreErrors(t *testing.T) {
	nixtest.Require(t)
	for _, tt := range []struct {
		name string
		open func(t *testing.T) error
		want string
	}{
		{"no Nix", func(t *testing.T) error {
			t.Setenv("PATH", t.TempDir())
			_, err := store.Open(t.TempDir(), store.Options{Kind: store.Kind{Backend: store.BackendNix,
				Nix: store.NixOptions{Socket: filepath.Join(t.TempDir(), "none")}}})
			return err
		}, "Nix is not installed"},
		{"store dir mismatch", func(t *testing.T) error {
			kind, _ := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
			_, err := store.Open(t.TempDir(), store.Options{StoreDir: "/gnu/store", Kind: kind})
			return err
		}, "another store dir"},
		{"home of the other backend", func(t *testing.T) error {
			home := t.TempDir()
			s, err := store.Open(home, store.Options{})
			if err != nil {
				return err
			}
			s.Close()
			kind, _ := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
			_, err = store.Open(home, store.Options{Kind: kind})
			return err
		}, "was made for the embedded store"},
		{"home of another Nix store", func(t *testing.T) error {
			home := t.TempDir()
			kind, _ := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
			s, err := store.Open(home, store.Options{Kind: kind})
			if err != nil {
				return err
			}
			s.Close()
			other, _ := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
			_, err = store.Open(home, store.Options{Kind: other})
			return err
		}, "was made for the Nix store under"},
		{"bad --nix-store", func(t *testing.T) error {
			_, err := store.ParseKind(store.BackendNix, "ssh://elsewhere")
			return err
		}, "local?root="},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.open(t)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// outliveRoots waits, using s meanwhile, until the temporary roots s made
// (rootTTL shortened) have been dropped, unless a Hold keeps them.
func outliveRoots(t *testing.T, s *store.Store, p nix.Path) {
	t.Helper()
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		if _, err := s.IsValid(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNixStoreHoldKeepsWhatItDelivered: while a Hold is open (a sync),
// what the store added and what it found valid stay rooted however long
// it takes, and Nix's garbage collector leaves them; without one, they are
// Nix's to collect once the temporary roots lapse.
func TestNixStoreHoldKeepsWhatItDelivered(t *testing.T) {
	nixtest.Require(t)
	defer store.SetRootTTL(50 * time.Millisecond)()
	for _, held := range []bool{true, false} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			root := t.TempDir()
			s := openNixAt(t, root)
			found := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--add", writeFile(t, "found valid"))))
			fp, err := nix.ParsePath(nix.DefaultStoreDir, found)
			if err != nil {
				t.Fatal(err)
			}
			release := func() {}
			if held {
				release = s.Hold()
			}
			if ok, err := s.IsValid(fp); err != nil || !ok {
				t.Fatalf("IsValid(%s) = %v, %v", found, ok, err)
			}
			file := writeFile(t, "delivered")
			var nar bytes.Buffer
			if _, err := nix.DumpNAR(&nar, file); err != nil {
				t.Fatal(err)
			}
			narHash := nix.Hash(sha256.Sum256(nar.Bytes()))
			dp, err := nix.MakePath(nix.DefaultStoreDir, "output:out", nix.Hash{2}, "delivered")
			if err != nil {
				t.Fatal(err)
			}
			info := &nix.PathInfo{Path: dp, NarHash: narHash, NarSize: uint64(nar.Len())}
			if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar.Bytes())); err != nil {
				t.Fatal(err)
			}
			outliveRoots(t, s, dp)
			nixtest.Run(t, "nix-collect-garbage", "--store", "local?root="+root)
			for _, p := range []nix.Path{fp, dp} {
				ok, err := s.IsValid(p)
				if err != nil {
					t.Fatal(err)
				}
				if ok != held {
					t.Errorf("held=%v: %s valid after Nix's GC: %v", held, p.Abs(nix.DefaultStoreDir), ok)
				}
			}
			release()
		})
	}
}

func writeFile(t *testing.T, contents string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte(contents+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestNixStoreReindexesReplacedPath: a path trove added becomes
// collectable by Nix once the connection that added it retires, and an
// input-addressed path that Nix deletes and registers again with other
// contents (a build that is not reproducible) is served with its new
// chunk index, not the one recorded for the old contents.
func TestNixStoreReindexesReplacedPath(t *testing.T) {
	nixtest.Require(t)
	root := t.TempDir()
	s := openNixAt(t, root)
	p, err := nix.MakePath(nix.DefaultStoreDir, "output:out", nix.Hash{1}, "unreproducible")
	if err != nil {
		t.Fatal(err)
	}
	add := func(contents string) chunk.Index {
		t.Helper()
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, bytes.Repeat([]byte(contents), 50000), 0o644); err != nil {
			t.Fatal(err)
		}
		var nar bytes.Buffer
		if _, err := nix.DumpNAR(&nar, file); err != nil {
			t.Fatal(err)
		}
		info := &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len())}
		if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar.Bytes())); err != nil {
			t.Fatal(err)
		}
		want, err := chunk.IndexNAR(bytes.NewReader(nar.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return want
	}
	add("first build\n")
	if _, err := s.ChunkIndexOf(p.Hash); err != nil {
		t.Fatal(err)
	}
	// Nix made the path a temporary root of the connection that added
	// it; once that connection retires (any use of the store after
	// rootTTL), Nix may delete the path.
	defer store.SetRootTTL(50 * time.Millisecond)()
	outliveRoots(t, s, p)
	nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--delete", p.Abs(nix.DefaultStoreDir))
	want := add("second build, other bytes\n")
	got, err := s.ChunkIndexOf(p.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("the chunk index of a replaced path is the old contents'")
	}
}
