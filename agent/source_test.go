package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/bundle"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
)

// publisher is machine A: a store, a key trusted for everything it
// publishes, and a history.
type publisher struct {
	store *store.Store
	hist  *manifest.History
	key   manifest.SecretKey
}

func newPublisher(t *testing.T) *publisher {
	t.Helper()
	home := tempHome(t)
	s, err := store.Open(home, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	key, err := manifest.GenerateKey("laptop-1")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := manifest.LoadKeyring(manifest.TrustedKeysPath(home))
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(key.Public(), "*"); err != nil {
		t.Fatal(err)
	}
	return &publisher{store: s, hist: manifest.OpenHistory(home, kr), key: key}
}

func tempHome(t *testing.T) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755) // store trees are read-only
			}
			return nil
		})
	})
	return filepath.Join(dir, "home")
}

// addConfig adds an unsigned, input-addressed configuration: a library and
// a root whose bin/activate prints the generation. Only a manifest can
// vouch for such paths.
func (p *publisher) addConfig(t *testing.T, version string) nix.Path {
	t.Helper()
	lib := p.add(t, "lib-"+version, map[string]string{"data": "library " + version}, nil)
	return p.add(t, "system-"+version, map[string]string{
		"bin/activate": "#!/bin/sh\necho \"activated $TROVE_GENERATION\"\n",
		"lib":          lib.Abs(p.store.StoreDir()),
	}, []nix.Path{lib})
}

func (p *publisher) add(t *testing.T, name string, files map[string]string, refs []nix.Path) nix.Path {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for rel, content := range files {
		f := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(f), 0o755)
		if err := os.WriteFile(f, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var nar bytes.Buffer
	if _, err := nix.DumpNAR(&nar, dir); err != nil {
		t.Fatal(err)
	}
	path, err := nix.MakePath(p.store.StoreDir(), "output:out", nix.Hash(sha256.Sum256([]byte(name))), name)
	if err != nil {
		t.Fatal(err)
	}
	info := &nix.PathInfo{Path: path, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len()), References: refs}
	if _, err := p.store.AddNAR(context.Background(), info, &nar); err != nil {
		t.Fatal(err)
	}
	return path
}

// publishBundle publishes root as the next generation of laptop and writes
// a bundle of it to file.
func (p *publisher) publishBundle(t *testing.T, root nix.Path, file string) *manifest.Manifest {
	t.Helper()
	m, _, err := profile.Publish(p.store, p.hist, p.key, "laptop", root, profile.Commands{Activate: "bin/activate"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := bundle.Create(context.Background(), &b, p.store, p.hist, []string{"laptop"}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(file), 0o755)
	// As a copy to a stick would: the name appears when the bytes are there.
	if err := os.WriteFile(file+".part", b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".part", file); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOfflineReproductionFromSource is the offline story of issue 6: a
// configuration published on A reaches B, which has no peers and no
// network, as a bundle on a "USB stick" that B's agent watches; B trusts
// only A's key for the configuration's name. B activates it.
func TestOfflineReproductionFromSource(t *testing.T) {
	old := sourceInterval
	sourceInterval = 50 * time.Millisecond
	t.Cleanup(func() { sourceInterval = old })

	a := newPublisher(t)
	usb := t.TempDir()
	os.WriteFile(filepath.Join(usb, "junk.trove"), []byte("not a bundle"), 0o644) // logged, and does not block the rest
	root1 := a.addConfig(t, "one")
	m1 := a.publishBundle(t, root1, filepath.Join(usb, "configs", "laptop-1.trove"))

	homeB := tempHome(t)
	os.MkdirAll(homeB, 0o755)
	kr, err := manifest.LoadKeyring(manifest.TrustedKeysPath(homeB))
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(a.key.Public(), "laptop"); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	b, err := Start(context.Background(), Config{Home: homeB, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Sources: []string{usb},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if n := len(b.Node.ConnectedPeers()); n != 0 {
		t.Fatalf("B has %d peers; it must have none", n)
	}

	waitUntil(t, "B imports generation 1 from the stick", func() bool {
		ok, _ := b.Store.IsValid(root1)
		_, _, err := b.History.Get("laptop", 1)
		return ok && err == nil
	})
	m, _, err := b.History.Get("laptop", 0)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := m.ID(); id != mustID(t, m1) {
		t.Fatal("B's manifest is not A's")
	}
	var out bytes.Buffer
	prof := profile.OpenProfiles(b.Store)
	if err := profile.Activate(context.Background(), prof, m, profile.ActivateOptions{Run: true, Stdout: &out, Stderr: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "activated 1\n" {
		t.Fatalf("activation printed %q", out.String())
	}
	requireSameNAR(t, a.store, b.Store, root1)

	// Following with --activate, the next generation from the stick is
	// activated by the agent itself.
	if err := SaveFollows(homeB, []Follow{{Name: "laptop", Activate: true}}); err != nil {
		t.Fatal(err)
	}
	root2 := a.addConfig(t, "two")
	a.publishBundle(t, root2, filepath.Join(usb, "configs", "laptop-2.trove"))
	waitUntil(t, "B activates generation 2 from the stick", func() bool {
		cur, _ := prof.Current("laptop")
		return cur == 2
	})
	requireSameNAR(t, a.store, b.Store, root2)
	if n := strings.Count(logs.String(), "importing a bundle failed"); n != 1 {
		t.Fatalf("the junk bundle was reported %d times, want once:\n%s", n, logs.String())
	}
	var problems []string
	if _, err := b.Store.Verify(context.Background(), nil, func(p store.Problem) { problems = append(problems, p.Error()) }); err != nil || len(problems) > 0 {
		t.Fatalf("verify: %v %v", err, problems)
	}
}

func mustID(t *testing.T, m *manifest.Manifest) manifest.ID {
	t.Helper()
	id, err := m.ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func requireSameNAR(t *testing.T, a, b *store.Store, p nix.Path) {
	t.Helper()
	var na, nb bytes.Buffer
	if err := a.WriteNAR(context.Background(), &na, p, 0, -1); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteNAR(context.Background(), &nb, p, 0, -1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(na.Bytes(), nb.Bytes()) {
		t.Fatalf("%s differs between the machines", p)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
