package nixcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// chain makes leaf ← mid ← top in s: two trees that refer to what they
// reference by name, input-addressed (so only a signature vouches).
func chain(t testing.TB, s *store.Store) []*nix.PathInfo {
	t.Helper()
	ctx := context.Background()
	leaf, _ := addTree(t, s, "leaf", 5000)
	var out []*nix.PathInfo
	out = append(out, leaf)
	for _, name := range []string{"mid", "top"} {
		scratch := openStore(t)
		tmp, nar := addTree(t, scratch, name, 70<<10)
		p, err := nix.MakePath(s.StoreDir(), "output:out", tmp.NarHash, name)
		if err != nil {
			t.Fatal(err)
		}
		refs := []nix.Path{out[len(out)-1].Path}
		if name == "top" {
			refs = append(refs, leaf.Path)
		}
		pi, err := s.AddNAR(ctx, &nix.PathInfo{Path: p, NarHash: tmp.NarHash, References: refs}, bytes.NewReader(nar))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pi)
	}
	return out
}

// writeCache writes the closures of roots in s as a Nix binary cache in a
// new directory, compressed as asked, each narinfo signed by key (if set).
func writeCache(t testing.TB, s *store.Store, compression string, key *manifest.SecretKey, roots ...nix.Path) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "nar"), 0o755)
	os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: "+s.StoreDir()), 0o644)
	infos, err := s.Closure(roots...)
	if err != nil {
		t.Fatal(err)
	}
	for _, pi := range infos {
		var nar, file bytes.Buffer
		if err := s.WriteNAR(context.Background(), &nar, pi.Path, 0, -1); err != nil {
			t.Fatal(err)
		}
		ext := ""
		switch compression {
		case "none":
			file = nar
		case "xz":
			ext = ".xz"
			w, _ := xz.NewWriter(&file)
			w.Write(nar.Bytes())
			w.Close()
		case "zstd":
			ext = ".zst"
			w, _ := zstd.NewWriter(&file)
			w.Write(nar.Bytes())
			w.Close()
		default:
			t.Fatalf("compression %s", compression)
		}
		fh := nix.Hash(sha256.Sum256(file.Bytes()))
		url := "nar/" + nixbase32.EncodeToString(fh[:]) + ".nar" + ext
		if err := os.WriteFile(filepath.Join(dir, url), file.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		ni := &nixcache.NarInfo{Info: *pi, URL: url, Compression: compression, FileHash: fh, FileSize: uint64(file.Len())}
		ni.Info.Sigs = nil
		if key != nil {
			ni.Info.Sigs = []string{key.Sign(pi.Fingerprint(s.StoreDir()))}
		}
		writeNarInfo(t, dir, s.StoreDir(), ni)
	}
	return dir
}

func narInfoFile(dir string, p nix.Path) string {
	return filepath.Join(dir, p.Hash.String()+".narinfo")
}

func writeNarInfo(t testing.TB, dir, storeDir string, ni *nixcache.NarInfo) {
	t.Helper()
	if err := os.WriteFile(narInfoFile(dir, ni.Info.Path), ni.Encode(storeDir), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readNarInfo(t testing.TB, dir, storeDir string, p nix.Path) *nixcache.NarInfo {
	t.Helper()
	b, err := os.ReadFile(narInfoFile(dir, p))
	if err != nil {
		t.Fatal(err)
	}
	ni, err := nixcache.ParseNarInfo(storeDir, b)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// keyring returns a keyring trusting keys.
func keyring(t testing.TB, keys ...manifest.SecretKey) *manifest.Keyring {
	t.Helper()
	kr, err := manifest.LoadKeyring(filepath.Join(t.TempDir(), "trusted-keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := kr.Add(k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	return kr
}

// sameInfos checks that dst holds paths as src does.
func sameInfos(t testing.TB, src, dst *store.Store, want []*nix.PathInfo) {
	t.Helper()
	for _, w := range want {
		got, err := dst.Lookup(w.Path)
		if err != nil {
			t.Errorf("%s: %v", w.Path, err)
			continue
		}
		if got.NarHash != w.NarHash || got.NarSize != w.NarSize || !slices.Equal(got.References, w.References) || got.CA != w.CA {
			t.Errorf("%s: imported %+v, want %+v", w.Path, got, w)
		}
	}
}

// noneValid checks that none of paths became valid in s.
func noneValid(t testing.TB, s *store.Store, paths []*nix.PathInfo) {
	t.Helper()
	for _, pi := range paths {
		if ok, _ := s.IsValid(pi.Path); ok {
			t.Errorf("%s became valid", pi.Path)
		}
	}
}

func TestImportCache(t *testing.T) {
	key := newKey(t, "cache-1")
	src := openStore(t)
	paths := chain(t, src)
	top := paths[2].Path
	for _, compression := range []string{"none", "xz", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			dir := writeCache(t, src, compression, &key, top)
			for _, via := range []string{"file", "http"} {
				url := "file://" + dir
				if via == "http" {
					srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
					defer srv.Close()
					url = srv.URL + "/"
				}
				dst := openStore(t)
				added, err := nixcache.ImportCache(context.Background(), dst, keyring(t, key), url, []nix.Path{top}, true)
				if err != nil {
					t.Fatalf("%s: %v", via, err)
				}
				var order []string
				for _, pi := range added {
					order = append(order, pi.Path.Name)
				}
				if !slices.Equal(order, []string{"leaf", "mid", "top"}) {
					t.Fatalf("%s: added %v, want references first", via, order)
				}
				sameInfos(t, src, dst, paths)
				if pi, _ := dst.Lookup(top); len(pi.Sigs) != 1 {
					t.Errorf("%s: the cache's signature was not kept: %q", via, pi.Sigs)
				}
				again, err := nixcache.ImportCache(context.Background(), dst, keyring(t, key), url, []nix.Path{top}, true)
				if err != nil || len(again) != 0 {
					t.Fatalf("%s: a second import added %d paths: %v", via, len(again), err)
				}
			}
		})
	}
}

func TestImportCacheNeedsTrust(t *testing.T) {
	src := openStore(t)
	paths := chain(t, src)
	top := paths[2].Path
	dir := writeCache(t, src, "none", nil, top)
	stranger := newKey(t, "stranger-1")
	dst := openStore(t)
	_, err := nixcache.ImportCache(context.Background(), dst, keyring(t, stranger), "file://"+dir, []nix.Path{top}, true)
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "trove trust add") {
		t.Fatalf("unsigned cache: %v", err)
	}
	noneValid(t, dst, paths)
	// Signed by a key nobody trusts: the same.
	dir = writeCache(t, src, "none", &stranger, top)
	_, err = nixcache.ImportCache(context.Background(), dst, keyring(t), "file://"+dir, []nix.Path{top}, true)
	if !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("cache signed by an untrusted key: %v", err)
	}
	noneValid(t, dst, paths)
	// --no-check-sigs believes it (the NARs are still checked).
	if _, err := nixcache.ImportCache(context.Background(), dst, keyring(t), "file://"+dir, []nix.Path{top}, false); err != nil {
		t.Fatal(err)
	}
	sameInfos(t, src, dst, paths)
}

// TestImportCacheContentAddressed: a path whose name recomputes from its
// content needs no signature; one whose CA claim does not recompute does.
func TestImportCacheContentAddressed(t *testing.T) {
	src := openStore(t)
	ca, _ := addTree(t, src, "source", 3000)
	dir := writeCache(t, src, "zstd", nil, ca.Path)
	dst := openStore(t)
	if _, err := nixcache.ImportCache(context.Background(), dst, keyring(t), "file://"+dir, []nix.Path{ca.Path}, true); err != nil {
		t.Fatal(err)
	}
	sameInfos(t, src, dst, []*nix.PathInfo{ca})

	ni := readNarInfo(t, dir, src.StoreDir(), ca.Path)
	other, _ := addTree(t, openStore(t), "source", 3000)
	ni.Info.CA = other.CA // another tree's address: it does not give this name
	ni.Info.NarHash = other.NarHash
	writeNarInfo(t, dir, src.StoreDir(), ni)
	dst = openStore(t)
	_, err := nixcache.ImportCache(context.Background(), dst, keyring(t), "file://"+dir, []nix.Path{ca.Path}, true)
	if !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("a CA claim that does not recompute: %v", err)
	}
	noneValid(t, dst, []*nix.PathInfo{ca})
}

// TestImportCacheRefusesBadCaches breaks a signed cache in the ways a
// broken or hostile cache could, and checks that nothing becomes valid.
func TestImportCacheRefusesBadCaches(t *testing.T) {
	key := newKey(t, "cache-1")
	src := openStore(t)
	paths := chain(t, src)
	leaf, mid, top := paths[0], paths[1], paths[2]
	sign := func(ni *nixcache.NarInfo) {
		ni.Info.Sigs = []string{key.Sign(ni.Info.Fingerprint(src.StoreDir()))}
	}
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"wrong NarHash, signed", func(t *testing.T, dir string) {
			ni := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			ni.Info.NarHash, ni.FileHash = mid.NarHash, nix.Hash{}
			sign(ni) // a trusted signer vouched for a wrong hash: the NAR still decides
			writeNarInfo(t, dir, src.StoreDir(), ni)
		}, "NAR hash mismatch"},
		{"another path's NAR", func(t *testing.T, dir string) {
			a := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			b := readNarInfo(t, dir, src.StoreDir(), mid.Path)
			nar, _ := os.ReadFile(filepath.Join(dir, b.URL))
			os.WriteFile(filepath.Join(dir, a.URL), nar, 0o644)
		}, "NAR"},
		{"truncated NAR", func(t *testing.T, dir string) {
			a := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			nar, _ := os.ReadFile(filepath.Join(dir, a.URL))
			os.WriteFile(filepath.Join(dir, a.URL), nar[:len(nar)/2], 0o644)
		}, "leaf"},
		{"NAR longer than NarSize says", func(t *testing.T, dir string) {
			ni := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			ni.Info.NarSize -= 8
			ni.FileSize = 0
			sign(ni)
			writeNarInfo(t, dir, src.StoreDir(), ni)
		}, "leaf"},
		{"missing NAR", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, readNarInfo(t, dir, src.StoreDir(), leaf.Path).URL))
		}, "its NAR"},
		{"missing narinfo of a reference", func(t *testing.T, dir string) {
			os.Remove(narInfoFile(dir, leaf.Path))
		}, "not in the cache"},
		{"narinfo of another path", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(narInfoFile(dir, mid.Path))
			os.WriteFile(narInfoFile(dir, leaf.Path), b, 0o644)
		}, "describes"},
		{"malformed narinfo", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(narInfoFile(dir, leaf.Path))
			os.WriteFile(narInfoFile(dir, leaf.Path), bytes.Replace(b, []byte("NarSize: "), []byte("NarSize: -"), 1), 0o644)
		}, "malformed narinfo"},
		{"NAR URL out of the cache", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(narInfoFile(dir, leaf.Path))
			os.WriteFile(narInfoFile(dir, leaf.Path), regexpURL(b, "URL: nar/../../../etc/passwd"), 0o644)
		}, "no empty, . or .. parts"},
		{"absolute NAR URL in a file cache", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(narInfoFile(dir, leaf.Path))
			os.WriteFile(narInfoFile(dir, leaf.Path), regexpURL(b, "URL: http://example.invalid/x.nar"), 0o644)
		}, "cannot be read"},
		{"unsupported compression", func(t *testing.T, dir string) {
			ni := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			ni.Compression = "lz4"
			writeNarInfo(t, dir, src.StoreDir(), ni)
		}, "unsupported compression lz4"},
		{"another store dir", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /gnu/store\n"), 0o644)
		}, "/gnu/store"},
		{"reference cycle", func(t *testing.T, dir string) {
			ni := readNarInfo(t, dir, src.StoreDir(), leaf.Path)
			ni.Info.References = []nix.Path{top.Path}
			sign(ni)
			writeNarInfo(t, dir, src.StoreDir(), ni)
		}, "cycle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeCache(t, src, "none", &key, top.Path)
			tc.break_(t, dir)
			dst := openStore(t)
			_, err := nixcache.ImportCache(context.Background(), dst, keyring(t, key), "file://"+dir, []nix.Path{top.Path}, true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			t.Log(err)
			noneValid(t, dst, paths)
		})
	}
}

// regexpURL replaces the URL line of a narinfo.
func regexpURL(b []byte, line string) []byte {
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "URL: ") {
			lines[i] = line
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

func TestImportCacheURLs(t *testing.T) {
	s := openStore(t)
	p, _ := nix.ParseBase(strings.Repeat("0", 32) + "-x")
	for _, url := range []string{"ftp://host/x", "file://relative/dir", "file:///does/not/exist", "s3://bucket", "http://"} {
		if _, err := nixcache.ImportCache(context.Background(), s, keyring(t), url, []nix.Path{p}, true); err == nil {
			t.Errorf("%s: accepted", url)
		}
	}
}
