package nixcache_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/store"
)

// openStore opens a fresh store that closes when the test ends.
func openStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addTree adds a directory with a random file of size bytes, a script and
// a symlink; it returns its info and its NAR.
func addTree(t testing.TB, s *store.Store, name string, size int) (*nix.PathInfo, []byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	data := make([]byte, size)
	rand.Read(data)
	os.WriteFile(filepath.Join(dir, "data"), data, 0o644)
	os.WriteFile(filepath.Join(dir, "bin", "run"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Symlink("bin/run", filepath.Join(dir, "link"))
	pi, err := s.AddTree(context.Background(), dir, name)
	if err != nil {
		t.Fatal(err)
	}
	var nar bytes.Buffer
	if err := s.WriteNAR(context.Background(), &nar, pi.Path, 0, -1); err != nil {
		t.Fatal(err)
	}
	return pi, nar.Bytes()
}

func newKey(t testing.TB, name string) manifest.SecretKey {
	t.Helper()
	k, err := manifest.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serve(t testing.TB, cfg nixcache.Config) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, err := nixcache.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv
}

func get(t testing.TB, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func narURLOf(pi *nix.PathInfo) string {
	return "nar/" + pi.Path.Hash.String() + "-" + nixbase32.EncodeToString(pi.NarHash[:]) + ".nar"
}

func TestServeCacheInfo(t *testing.T) {
	srv := serve(t, nixcache.Config{Store: openStore(t)})
	const want = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
	resp, body := get(t, "GET", srv.URL+"/nix-cache-info")
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	resp, body = get(t, "HEAD", srv.URL+"/nix-cache-info")
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD: %d %d %q", resp.StatusCode, resp.ContentLength, body)
	}
	if resp, _ := get(t, "POST", srv.URL+"/nix-cache-info"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestServeNarInfo(t *testing.T) {
	s := openStore(t)
	ref, _ := addTree(t, s, "ref", 10)
	// A path with references and signatures of its own: added from a NAR.
	other, own := newKey(t, "upstream-1"), newKey(t, "agent-1")
	src := openStore(t)
	pi0, nar := addTree(t, src, "with-refs", 1000)
	info := &nix.PathInfo{Path: pi0.Path, NarHash: pi0.NarHash, NarSize: pi0.NarSize, References: []nix.Path{ref.Path}}
	// Stale: a signature by the agent's key name, over something else.
	info.Sigs = []string{other.Sign(info.Fingerprint(s.StoreDir())), own.Sign("stale")}
	pi, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar))
	if err != nil {
		t.Fatal(err)
	}

	srv := serve(t, nixcache.Config{Store: s, Key: &own})
	resp, body := get(t, "GET", srv.URL+"/"+pi.Path.Hash.String()+".narinfo")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/x-nix-narinfo" {
		t.Fatalf("%d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	ni, err := nixcache.ParseNarInfo(s.StoreDir(), body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if ni.Info.Path != pi.Path || ni.Info.NarHash != pi.NarHash || ni.Info.NarSize != pi.NarSize ||
		len(ni.Info.References) != 1 || ni.Info.References[0] != ref.Path || ni.Info.CA != "" ||
		ni.Compression != "none" || ni.FileHash != pi.NarHash || ni.FileSize != pi.NarSize || ni.URL != narURLOf(pi) {
		t.Fatalf("served:\n%s", body)
	}
	if len(ni.Info.Sigs) != 2 || !other.Public().Verify(pi.Fingerprint(s.StoreDir()), ni.Info.Sigs[0]) ||
		!own.Public().Verify(pi.Fingerprint(s.StoreDir()), ni.Info.Sigs[1]) {
		t.Fatalf("signatures: %q", ni.Info.Sigs)
	}
	// Empty references are written as Nix writes them.
	_, body = get(t, "GET", srv.URL+"/"+ref.Path.Hash.String()+".narinfo")
	if !strings.Contains(string(body), "\nReferences: \n") || !strings.Contains(string(body), "\nCA: fixed:r:sha256:") {
		t.Fatalf("narinfo of a path without references:\n%s", body)
	}
	resp, body = get(t, "HEAD", srv.URL+"/"+pi.Path.Hash.String()+".narinfo")
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength <= 0 {
		t.Fatalf("HEAD: %d %d", resp.StatusCode, resp.ContentLength)
	}
	for _, p := range []string{
		"/" + strings.Repeat("0", 32) + ".narinfo", // valid hash, absent
		"/" + pi.Path.String() + ".narinfo",        // the name is not part of it
		"/e" + strings.Repeat("0", 31) + ".narinfo",
		"/.narinfo",
		"/log/" + pi.Path.String(),
		"/" + pi.Path.Hash.String() + ".ls",
	} {
		if resp, _ := get(t, "GET", srv.URL+p); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestServeNAR(t *testing.T) {
	s := openStore(t)
	pi, nar := addTree(t, s, "big", 3<<20)
	srv := serve(t, nixcache.Config{Store: s})
	url := srv.URL + "/" + narURLOf(pi)
	size := int64(len(nar))

	resp, body := get(t, "GET", url)
	if resp.StatusCode != 200 || !bytes.Equal(body, nar) || resp.ContentLength != size ||
		resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Content-Type") != "application/x-nix-nar" {
		t.Fatalf("GET: %d, %d bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}
	etag := resp.Header.Get("ETag")
	resp, body = get(t, "HEAD", url)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != size {
		t.Fatalf("HEAD: %d %d", resp.StatusCode, resp.ContentLength)
	}

	for _, tc := range []struct {
		rng, ifRange string
		status       int
		from, to     int64 // bytes expected, [from, to)
	}{
		{"bytes=0-99", "", 206, 0, 100},
		{"bytes=100-", "", 206, 100, size},
		{"bytes=-50", "", 206, size - 50, size},
		{"bytes=-0", "", 416, 0, 0},
		{fmt.Sprintf("bytes=%d-%d", size-10, size+1000), "", 206, size - 10, size},
		{fmt.Sprintf("bytes=%d-", size), "", 416, 0, 0},
		{"bytes=5-2", "", 200, 0, size},         // malformed: ignored
		{"bytes=0-1,5-6", "", 200, 0, size},     // several: the whole body
		{"items=0-1", "", 200, 0, size},         // unknown unit
		{"bytes=0-99", etag, 206, 0, 100},       // unchanged
		{"bytes=0-99", `"other"`, 200, 0, size}, // changed: the whole body
	} {
		hdr := []string{"Range", tc.rng}
		if tc.ifRange != "" {
			hdr = append(hdr, "If-Range", tc.ifRange)
		}
		resp, body := get(t, "GET", url, hdr...)
		if resp.StatusCode != tc.status {
			t.Errorf("Range %s: status %d, want %d", tc.rng, resp.StatusCode, tc.status)
			continue
		}
		switch tc.status {
		case 206:
			want := fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to-1, size)
			if resp.Header.Get("Content-Range") != want || !bytes.Equal(body, nar[tc.from:tc.to]) {
				t.Errorf("Range %s: Content-Range %q (want %q), %d bytes", tc.rng, resp.Header.Get("Content-Range"), want, len(body))
			}
		case 416:
			if resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
				t.Errorf("Range %s: Content-Range %q", tc.rng, resp.Header.Get("Content-Range"))
			}
		case 200:
			if !bytes.Equal(body, nar) {
				t.Errorf("Range %s: %d bytes, want the whole NAR", tc.rng, len(body))
			}
		}
	}

	// The right path with another NAR hash, or malformed names: 404.
	wrong := "nar/" + pi.Path.Hash.String() + "-" + strings.Repeat("0", 52) + ".nar"
	for _, p := range []string{
		wrong,
		strings.TrimSuffix(narURLOf(pi), ".nar"),
		narURLOf(pi) + ".xz",
		strings.Replace(narURLOf(pi), "-", "_", 1),
		"nar/" + pi.Path.String() + ".nar",
		"nar/",
	} {
		if resp, _ := get(t, "GET", srv.URL+"/"+p); resp.StatusCode != 404 {
			t.Errorf("GET /%s: %d, want 404", p, resp.StatusCode)
		}
	}
}

// TestServePathTraversal sends raw request lines, which no client library
// cleans first, and checks that none reads outside the store.
func TestServePathTraversal(t *testing.T) {
	s := openStore(t)
	pi, _ := addTree(t, s, "x", 10)
	srv := serve(t, nixcache.Config{Store: s})
	good := narURLOf(pi)
	for _, target := range []string{
		"/nar/../../etc/passwd",
		"/nar/../../../../../../etc/passwd",
		"/nar/%2e%2e/%2e%2e/etc/passwd",
		"/nar/..%2f..%2f..%2fetc%2fpasswd",
		"/%2e%2e/%2e%2e/etc/passwd",
		"/../../etc/passwd",
		"//etc/passwd",
		"/nix-cache-info/../../etc/passwd",
		"/" + good + "/../../../etc/passwd",
		"/nar/" + strings.Repeat("0", 32) + "-../../../../etc/passwd.nar",
		"/" + strings.Replace(good, "nar/", "nar/%2e/", 1),
		"/" + strings.Replace(good, "nar/", "nar%2f", 1),
		"/" + pi.Path.Hash.String() + "%2enarinfo",
		"http://localhost/nar/../../etc/passwd",
		"/etc/passwd",
		"/nar/\\..\\..\\etc\\passwd",
	} {
		status, body := rawGet(t, srv.Listener.Addr().String(), target)
		if status != 404 && status != 400 {
			t.Errorf("GET %s: status %d, want 404 or 400", target, status)
		}
		if strings.Contains(body, "root:") {
			t.Errorf("GET %s served /etc/passwd", target)
		}
	}
}

// rawGet sends one request line as written and returns the status and body.
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeConcurrently(t *testing.T) {
	s := openStore(t)
	var pis []*nix.PathInfo
	var nars [][]byte
	for i := range 4 {
		pi, nar := addTree(t, s, fmt.Sprintf("p%d", i), 200<<10)
		pis, nars = append(pis, pi), append(nars, nar)
	}
	srv := serve(t, nixcache.Config{Store: s, Key: new(newKey(t, "k"))})
	var wg gosync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			pi, nar := pis[i%4], nars[i%4]
			resp, err := http.Get(srv.URL + "/" + narURLOf(pi))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(b, nar) {
				errs <- fmt.Errorf("NAR %d: got %d bytes", i%4, len(b))
			}
			resp, err = http.Get(srv.URL + "/" + pi.Path.Hash.String() + ".narinfo")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("narinfo: %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// fakeSource is a Source with func fields and call counters.
type fakeSource struct {
	find           func(ctx context.Context, h nix.PathHash) (nix.Path, error)
	fetch          func(ctx context.Context, p nix.Path) error
	finds, fetches atomic.Int32
}

func (f *fakeSource) Find(ctx context.Context, h nix.PathHash) (nix.Path, error) {
	f.finds.Add(1)
	return f.find(ctx, h)
}

func (f *fakeSource) Fetch(ctx context.Context, p nix.Path) error {
	f.fetches.Add(1)
	return f.fetch(ctx, p)
}

func TestServeFetchesOnceFromSource(t *testing.T) {
	remote, local := openStore(t), openStore(t)
	pi, nar := addTree(t, remote, "elsewhere", 100<<10)
	release := make(chan struct{})
	src := &fakeSource{
		find: func(ctx context.Context, h nix.PathHash) (nix.Path, error) {
			if h != pi.Path.Hash {
				return nix.Path{}, nixcache.ErrNotFound
			}
			return pi.Path, nil
		},
		fetch: func(ctx context.Context, p nix.Path) error {
			<-release // every request below is waiting by now
			var buf bytes.Buffer
			if err := remote.WriteNAR(ctx, &buf, p, 0, -1); err != nil {
				return err
			}
			_, err := local.AddNAR(ctx, &nix.PathInfo{Path: p, NarHash: pi.NarHash, CA: pi.CA}, &buf)
			return err
		},
	}
	h, err := nixcache.New(t.Context(), nixcache.Config{Store: local, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	var arrived atomic.Int32 // requests that reached the handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	const n = 32
	var wg gosync.WaitGroup
	statuses := make(chan int, 2*n)
	for i := range n {
		wg.Go(func() {
			url := srv.URL + "/" + pi.Path.Hash.String() + ".narinfo"
			if i%2 == 1 {
				url = srv.URL + "/" + narURLOf(pi)
			}
			resp, err := http.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
			if i%2 == 1 && !bytes.Equal(b, nar) {
				t.Errorf("NAR of %d bytes", len(b))
			}
		})
	}
	// Every request is in the handler, so they overlap the one fetch
	// (one that came later would find the path local, and pass too).
	for deadline := time.Now().Add(10 * time.Second); arrived.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s only %d of %d requests reached the handler", arrived.Load(), n)
		}
	}
	close(release)
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Errorf("status %d", st)
		}
	}
	if f, g := src.finds.Load(), src.fetches.Load(); f != 1 || g != 1 {
		t.Fatalf("%d concurrent requests made %d finds and %d fetches, want 1 and 1", n, f, g)
	}
	// Now local: the source is not asked again.
	if resp, _ := get(t, "GET", srv.URL+"/"+pi.Path.Hash.String()+".narinfo"); resp.StatusCode != 200 || src.finds.Load() != 1 {
		t.Fatalf("%d, %d finds", resp.StatusCode, src.finds.Load())
	}
}

func TestServeAnswersMissesInTime(t *testing.T) {
	hang := &fakeSource{
		find: func(ctx context.Context, h nix.PathHash) (nix.Path, error) {
			<-ctx.Done() // a peer that never answers
			return nix.Path{}, ctx.Err()
		},
	}
	srv := serve(t, nixcache.Config{Store: openStore(t), Source: hang, Timeout: 300 * time.Millisecond})
	start := time.Now()
	resp, _ := get(t, "GET", srv.URL+"/"+strings.Repeat("1", 32)+".narinfo")
	if took := time.Since(start); resp.StatusCode != 404 || took > 2*time.Second {
		t.Fatalf("a lookup nobody answers: %d after %s, want 404 after about 300ms", resp.StatusCode, took)
	}

	// A path that is found but cannot be fetched: 404 when nothing vouches
	// for it, an error status (not cached by Nix as absent) otherwise.
	p, _ := nix.ParseBase(strings.Repeat("2", 32) + "-x")
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: untrusted", nixcache.ErrNotFound), 404},
		{errors.New("all peers stalled"), 502},
	} {
		src := &fakeSource{
			find:  func(ctx context.Context, h nix.PathHash) (nix.Path, error) { return p, nil },
			fetch: func(ctx context.Context, p nix.Path) error { return tc.err },
		}
		srv := serve(t, nixcache.Config{Store: openStore(t), Source: src})
		if resp, body := get(t, "GET", srv.URL+"/"+p.Hash.String()+".narinfo"); resp.StatusCode != tc.status {
			t.Errorf("fetch error %q: status %d %q, want %d", tc.err, resp.StatusCode, body, tc.status)
		}
	}
}
