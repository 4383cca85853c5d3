package nixcache_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/nixcache"
)

// narString is a NAR string token.
func narString(s string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, (8-len(s)%8)%8)...)
}

// diskUsage is the bytes allocated to the files under root.
func diskUsage(root string) int64 {
	var n int64
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

// stallingCache serves the binary cache in dir, except that every NAR is
// the start of one whose header claims a file of claimed bytes: sent bytes
// of it arrive, and then nothing until the client gives up. It says on
// stalled when it has sent them.
func stallingCache(t testing.TB, dir string, claimed uint64, sent int) (srv *httptest.Server, stalled chan struct{}) {
	t.Helper()
	stalled = make(chan struct{}, 16)
	quit := make(chan struct{})
	files := http.FileServer(http.Dir(dir))
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/nar/") {
			files.ServeHTTP(w, r)
			return
		}
		var nar []byte
		for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
			nar = append(nar, narString(tok)...)
		}
		nar = binary.LittleEndian.AppendUint64(nar, claimed)
		nar = append(nar, make([]byte, sent)...)
		w.Write(nar)
		w.(http.Flusher).Flush()
		stalled <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-quit: // the client hangs on: let srv.Close finish
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(quit) })
	return srv, stalled
}

// TestImportCacheStalledNAR: a cache serves a genuine signed narinfo, then
// a NAR whose header claims a 3 GB file, 256 KiB of it (less than the
// narinfo's NarSize), and then nothing. The import fails with an error
// that names the NAR's URL and says the cache stalled, it never takes much
// more disk than what arrived, and it leaves nothing behind.
func TestImportCacheStalledNAR(t *testing.T) {
	key := newKey(t, "cache-1")
	src := openStore(t)
	pi, _ := addTree(t, src, "hello", 1<<20)
	dir := writeCache(t, src, "none", &key, pi.Path)
	ni := readNarInfo(t, dir, src.StoreDir(), pi.Path)
	const claimed, sent = 3 << 30, 256 << 10
	srv, stalled := stallingCache(t, dir, claimed, sent)

	dst := openStore(t)
	trees := filepath.Join(dst.Home(), "store")
	done := make(chan error, 1)
	go func() {
		_, err := nixcache.ImportCache(context.Background(), dst, keyring(t, key), srv.URL, []nix.Path{pi.Path}, true,
			nixcache.WithTimeout(time.Second))
		done <- err
	}()
	var err error
	var most int64
	select {
	case <-stalled:
	case err = <-done:
		t.Fatalf("the import ended before the cache stalled: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the cache was never asked for the NAR")
	}
	// Watch the disk until the import gives up.
	guard := time.After(30 * time.Second)
watch:
	for {
		most = max(most, diskUsage(trees))
		select {
		case err = <-done:
			break watch
		case <-guard:
			t.Fatalf("the import still hangs 30 s after the cache stalled, holding %d bytes of disk", diskUsage(trees))
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Logf("import of a stalled NAR claiming %d bytes (%d sent): %v; at most %d bytes of disk taken", claimed, sent, err, most)
	if !errors.Is(err, nixcache.ErrStalled) {
		t.Errorf("error does not wrap ErrStalled: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), srv.URL+"/"+ni.URL) || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("error does not name the NAR's URL and say what to do: %v", err)
	}
	if most > 4*sent {
		t.Errorf("the import took %d bytes of disk for %d bytes received", most, sent)
	}
	if ok, _ := dst.IsValid(pi.Path); ok {
		t.Errorf("%s became valid", pi.Path)
	}
	ents, _ := os.ReadDir(trees)
	for _, e := range ents {
		t.Errorf("left behind in the store: %s", e.Name())
	}
	if n := diskUsage(trees); n > 4096 {
		t.Errorf("%d bytes left behind under %s", n, trees)
	}
}

// TestImportCacheStalledResponse: a cache that accepts the request for a
// narinfo and never answers fails the import too, naming the URL.
func TestImportCacheStalledResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nix-cache-info" {
			http.NotFound(w, r)
			return
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	dst := openStore(t)
	p, _ := nix.ParseBase(strings.Repeat("1", 32) + "-hello")
	_, err := nixcache.ImportCache(context.Background(), dst, keyring(t), srv.URL, []nix.Path{p}, true, nixcache.WithTimeout(200*time.Millisecond))
	if !errors.Is(err, nixcache.ErrStalled) || !strings.Contains(err.Error(), srv.URL+"/"+p.Hash.String()+".narinfo") {
		t.Fatalf("import from a cache that never answers: %v", err)
	}
	if _, err := nixcache.ImportCache(context.Background(), dst, keyring(t), srv.URL, []nix.Path{p}, true, nixcache.WithTimeout(0)); err == nil {
		t.Error("a zero timeout was accepted")
	}
}
