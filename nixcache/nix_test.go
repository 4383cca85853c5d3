package nixcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

func nixCmd(args ...string) []string {
	return append([]string{"--extra-experimental-features", "nix-command"}, args...)
}

// writeKeyFile writes k in Nix's secret key file format.
func writeKeyFile(t testing.TB, k manifest.SecretKey) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), k.Name+".secret")
	if err := os.WriteFile(f, []byte(k.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// nixInfos is `nix path-info --json -r top` of the host's Nix store.
func nixInfos(t testing.TB, top string) map[nix.Path]*nix.PathInfo {
	t.Helper()
	var entries []nix.NixPathInfo
	if err := json.Unmarshal(nixtest.Run(t, "nix", nixCmd("path-info", "--json", "-r", top)...), &entries); err != nil {
		t.Fatal(err)
	}
	out := map[nix.Path]*nix.PathInfo{}
	for _, e := range entries {
		pi, err := nix.FromNix(nix.DefaultStoreDir, e)
		if err != nil {
			t.Fatal(err)
		}
		out[pi.Path] = pi
	}
	return out
}

// importSignedFixture builds the fixture closure and imports it into s with
// store.ImportNix, signed by key. The signatures are made in a scratch Nix
// store (local?root=), so the host's Nix database, which other tests
// compare against, is left as it was.
func importSignedFixture(t *testing.T, s *store.Store, key manifest.SecretKey) []string {
	t.Helper()
	closure := nixtest.BuildFixtureClosure(t)
	top := closure[len(closure)-1]
	scratch := "local?root=" + t.TempDir()
	nixtest.Run(t, "nix", nixCmd("copy", "--no-check-sigs", "--to", scratch, top)...)
	nixtest.Run(t, "nix", nixCmd("store", "sign", "--store", scratch, "--key-file", writeKeyFile(t, key), "-r", top)...)
	nixtest.Isolate(t)
	t.Setenv("NIX_REMOTE", scratch) // for the nix path-info ImportNix runs
	added, err := s.ImportNix(context.Background(), []string{top}, nil)
	os.Unsetenv("NIX_REMOTE")
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != len(closure) || !key.Public().Verify(added[0].Fingerprint(s.StoreDir()), added[0].Sigs[0]) {
		t.Fatalf("imported %d paths (want %d), first signed %q", len(added), len(closure), added[0].Sigs)
	}
	return closure
}

// TestNixCopyFromSwarm: agent A holds a closure built by nix-build; agent B,
// paired with A, runs the cache endpoint with --cache-from-peers. Real Nix
// copies the whole closure from B, checking signatures against B's key
// only, and the copy verifies. The same client refuses the closure when
// the endpoint signs with a key it does not trust.
func TestNixCopyFromSwarm(t *testing.T) {
	nixtest.Require(t)
	keyA, keyB := newKey(t, "trove-a-1"), newKey(t, "trove-b-1")
	a := startAgent(t, agent.CacheConfig{})
	b := startAgent(t, agent.CacheConfig{Listen: "auto", FromPeers: true, Key: &keyB})
	if err := b.Keys.Add(keyA.Public()); err != nil { // B believes what A signed
		t.Fatal(err)
	}
	pair(t, a, b)
	closure := importSignedFixture(t, a.Store, keyA)
	top := closure[len(closure)-1]

	dest := "local?root=" + t.TempDir()
	start := time.Now()
	nixtest.Run(t, "nix", nixCmd("copy", "--from", cacheURL(b), "--to", dest, top,
		"--option", "trusted-public-keys", keyB.Public().String())...)
	t.Logf("nix copy --from the swarm: %s", time.Since(start))
	got := strings.Fields(string(nixtest.Run(t, "nix-store", "--store", dest, "--query", "--requisites", top)))
	if !slices.Equal(got, closure) {
		t.Fatalf("the copy holds %q, want %q", got, closure)
	}
	nixtest.Run(t, "nix-store", "--store", dest, "--verify", "--check-contents")
	for _, p := range closure {
		sp, _ := nix.ParsePath(nix.DefaultStoreDir, p)
		if ok, _ := b.Store.IsValid(sp); !ok {
			t.Errorf("%s was not fetched into B's store", p)
		}
	}

	// A path no peer has: a 404 at once (Nix caches it for an hour).
	startMiss := time.Now()
	resp, _ := get(t, "GET", cacheURL(b)+"/"+strings.Repeat("5", 32)+".narinfo")
	if took := time.Since(startMiss); resp.StatusCode != 404 || took > nixcache.DefaultTimeout+time.Second {
		t.Fatalf("a path no peer has: %d after %s", resp.StatusCode, took)
	}

	// The same store served with a key the client does not trust.
	keyC := newKey(t, "trove-c-1")
	other := serve(t, nixcache.Config{Store: b.Store, Key: &keyC})
	dest2 := "local?root=" + t.TempDir()
	cmd := nixtest.Command(t, "nix", nixCmd("copy", "--from", other.URL, "--to", dest2, top,
		"--option", "trusted-public-keys", keyB.Public().String())...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lacks a valid signature") {
		t.Fatalf("nix copy from a cache signed by an untrusted key: %v\n%s", err, out)
	}
	if err := nixtest.Command(t, "nix-store", "--store", dest2, "--check-validity", closure[0]).Run(); err == nil {
		t.Fatalf("%s became valid in the refusing client's store", closure[0])
	}
}

// TestImportCacheFromNix: `nix copy --to file://DIR` and then ImportCache
// give the narHashes, references and derivers Nix has, for every
// compression Nix 2.8 writes, from a directory and over HTTP.
func TestImportCacheFromNix(t *testing.T) {
	nixtest.Require(t)
	closure := nixtest.BuildFixtureClosure(t)
	top := closure[len(closure)-1]
	topPath, _ := nix.ParsePath(nix.DefaultStoreDir, top)
	want := nixInfos(t, top)
	key := newKey(t, "nix-cache-1")
	keyFile := writeKeyFile(t, key)
	ctx := context.Background()

	check := func(t *testing.T, s *store.Store, added []*nix.PathInfo) {
		t.Helper()
		if len(added) != len(closure) {
			t.Fatalf("added %d paths, want %d", len(added), len(closure))
		}
		for i, pi := range added {
			if pi.Path.Abs(s.StoreDir()) != closure[i] {
				t.Errorf("added %s as #%d, want %s (references first)", pi.Path, i, closure[i])
			}
			w := want[pi.Path]
			if w == nil || pi.NarHash != w.NarHash || pi.NarSize != w.NarSize || !slices.Equal(pi.References, w.References) || pi.Deriver != w.Deriver {
				t.Errorf("%s: imported %+v, Nix has %+v", pi.Path, pi, w)
			}
		}
		var problems []store.Problem
		if _, err := s.Verify(ctx, nil, func(p store.Problem) { problems = append(problems, p) }); err != nil || len(problems) > 0 {
			t.Errorf("verify: %v %v", err, problems)
		}
	}
	for _, compression := range []string{"none", "xz", "zstd", "bzip2"} {
		t.Run(compression, func(t *testing.T) {
			dir := t.TempDir()
			nixtest.Run(t, "nix", nixCmd("copy", "--to", "file://"+dir+"?compression="+compression+"&secret-key="+keyFile, top)...)
			s := openStore(t)
			added, err := nixcache.ImportCache(ctx, s, keyring(t, key), "file://"+dir, []nix.Path{topPath}, true)
			if err != nil {
				t.Fatal(err)
			}
			check(t, s, added)
			if compression != "xz" {
				return
			}
			srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
			defer srv.Close()
			s = openStore(t)
			added, err = nixcache.ImportCache(ctx, s, keyring(t, key), srv.URL, []nix.Path{topPath}, true)
			if err != nil {
				t.Fatal(err)
			}
			check(t, s, added)
		})
	}

	// A cache Nix wrote without signing: refused unless told otherwise.
	dir := t.TempDir()
	nixtest.Run(t, "nix", nixCmd("copy", "--to", "file://"+dir+"?compression=none", top)...)
	s := openStore(t)
	if _, err := nixcache.ImportCache(ctx, s, keyring(t, key), "file://"+dir, []nix.Path{topPath}, true); !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("unsigned cache: %v", err)
	}
	if ok, _ := s.IsValid(topPath); ok {
		t.Fatal("a path of the refused cache became valid")
	}
	added, err := nixcache.ImportCache(ctx, s, keyring(t), "file://"+dir, []nix.Path{topPath}, false)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s, added)
}
