package nixdaemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
)

// ghost is a path no test store has.
var ghost = nix.Path{Hash: nix.PathHash{1, 2, 3}, Name: "ghost"}

// versions are the protocol versions the interop tests speak: ours, the
// last with the unstructured error (framed NARs), and one whose
// AddToStoreNar has the daemon ask for the NAR piece by piece.
var versions = []struct {
	name    string
	version int
}{
	{"1.34", 0},
	{"1.25", 1<<8 | 25},
	{"1.22", 1<<8 | 22},
}

// overTransports runs test once for each transport, as a subtest.
func overTransports(t *testing.T, test func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { test(t, tr) })
	}
}

func TestHandshake(t *testing.T) {
	overTransports(t, testHandshake)
}

func testHandshake(t *testing.T, transport string) {
	s := newTestStoreOver(t, transport)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			c := s.client(t, Options{version: v.version})
			major, minor := c.Version()
			if got := major*1000 + minor; v.version == 0 && got != 1034 || v.version != 0 && got != 1000+v.version&0xff {
				t.Errorf("Version() = %d.%d", major, minor)
			}
			if dv := c.DaemonVersion(); (minor >= 33) != (dv != "") || minor >= 33 && !strings.HasPrefix(dv, "2.") {
				t.Errorf("DaemonVersion() = %q at protocol 1.%d", dv, minor)
			}
		})
	}
}

// TestAddAndQuery adds two paths, one referring to the other, and checks
// every query against what Nix's own commands say about the store.
func TestAddAndQuery(t *testing.T) {
	overTransports(t, testAddAndQuery)
}

func testAddAndQuery(t *testing.T, transport string) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := newTestStoreOver(t, transport)
			c := s.client(t, Options{version: v.version})
			ctx := context.Background()

			leaf, leafNAR := sourceInfo(t, tree{"data": "leaf data\n"}.write(t), "leaf", nil)
			top, topNAR := sourceInfo(t, tree{
				"bin/hello":    "!#!/bin/sh\necho " + leaf.Path.Abs(storeDir) + "\n",
				"leaf-link":    "@" + leaf.Path.Abs(storeDir),
				"share/empty":  "",
				"share/z/deep": strings.Repeat("x", 100_001),
			}.write(t), "top", []nix.Path{leaf.Path})
			top.Deriver = mustPath(t, "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-top.drv")
			top.Sigs = []string{"trove-test-1:" + base64.StdEncoding.EncodeToString(make([]byte, 64))}
			top.Ultimate = true
			top.RegistrationTime = time.Unix(1_700_000_000, 0)

			if err := add(ctx, c, leaf, leafNAR, true); err != nil {
				t.Fatal(err)
			}
			if err := add(ctx, c, top, topNAR, true); err != nil {
				t.Fatal(err)
			}

			for p, want := range map[nix.Path]bool{leaf.Path: true, top.Path: true, ghost: false} {
				if ok, err := c.IsValidPath(ctx, p); err != nil || ok != want {
					t.Errorf("IsValidPath(%s) = %v, %v; want %v", p, ok, err, want)
				}
			}
			valid, err := c.QueryValidPaths(ctx, []nix.Path{top.Path, ghost, leaf.Path})
			if want := nix.SortRefs([]nix.Path{leaf.Path, top.Path}); err != nil || !slices.Equal(nix.SortRefs(valid), want) {
				t.Errorf("QueryValidPaths = %v, %v; want %v", valid, err, want)
			}

			// QueryPathInfo against `nix path-info --json` and what was added.
			for _, want := range []*nix.PathInfo{leaf, top} {
				got, err := c.QueryPathInfo(ctx, want.Path)
				if err != nil {
					t.Fatal(err)
				}
				var entries []nix.NixPathInfo
				out := s.nix(t, "nix", "--extra-experimental-features", "nix-command", "path-info", "--json", want.Path.Abs(storeDir))
				if err := json.Unmarshal(out, &entries); err != nil || len(entries) != 1 {
					t.Fatalf("nix path-info: %v\n%s", err, out)
				}
				fromNix, err := nix.FromNix(storeDir, entries[0])
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, fromNix) {
					t.Errorf("QueryPathInfo(%s) =\n%+v\nnix path-info says\n%+v", want.Path, got, fromNix)
				}
				exp := *want
				if exp.RegistrationTime.IsZero() {
					exp.RegistrationTime = got.RegistrationTime // the daemon's clock
				}
				if !reflect.DeepEqual(got, &exp) {
					t.Errorf("QueryPathInfo(%s) =\n%+v\nadded\n%+v", want.Path, got, &exp)
				}
				if time.Since(got.RegistrationTime) > time.Hour && want.RegistrationTime.IsZero() {
					t.Errorf("registration time %v", got.RegistrationTime)
				}
			}
			if refs := strings.Fields(string(s.nix(t, "nix-store", "-q", "--references", top.Path.Abs(storeDir)))); !slices.Equal(refs, []string{leaf.Path.Abs(storeDir)}) {
				t.Errorf("nix-store -q --references = %q", refs)
			}

			if p, err := c.QueryPathFromHashPart(ctx, top.Path.Hash); err != nil || p != top.Path {
				t.Errorf("QueryPathFromHashPart = %v, %v", p, err)
			}
			if p, err := c.QueryPathFromHashPart(ctx, ghost.Hash); !errors.Is(err, nix.ErrNotValid) {
				t.Errorf("QueryPathFromHashPart(ghost) = %v, %v; want ErrNotValid", p, err)
			}
			if pi, err := c.QueryPathInfo(ctx, ghost); !errors.Is(err, nix.ErrNotValid) {
				t.Errorf("QueryPathInfo(ghost) = %v, %v; want ErrNotValid", pi, err)
			}
			if err := c.NarFromPath(ctx, ghost, io.Discard); !errors.Is(err, nix.ErrNotValid) {
				t.Errorf("NarFromPath(ghost) = %v; want ErrNotValid", err)
			}

			for _, p := range []*nix.PathInfo{leaf, top} {
				var got bytes.Buffer
				if err := c.NarFromPath(ctx, p.Path, &got); err != nil {
					t.Fatal(err)
				}
				// --dump reads a file system path, so name it under the chroot.
				want := nixtest.Run(t, "nix-store", "--dump", filepath.Join(s.root, p.Path.Abs(storeDir)))
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("NarFromPath(%s): %d bytes differ from nix-store --dump's %d", p.Path, got.Len(), len(want))
				}
			}

			all, err := c.QueryAllValidPaths(ctx)
			if want := nix.SortRefs([]nix.Path{leaf.Path, top.Path}); err != nil || !slices.Equal(nix.SortRefs(all), want) {
				t.Errorf("QueryAllValidPaths = %v, %v; want %v", all, err, want)
			}

			// A path added behind the client's back is seen.
			file := filepath.Join(t.TempDir(), "outside")
			if err := os.WriteFile(file, []byte("added by nix-store\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			outside, err := nix.ParsePath(storeDir, strings.TrimSpace(string(s.nix(t, "nix-store", "--add", file))))
			if err != nil {
				t.Fatal(err)
			}
			all, err = c.QueryAllValidPaths(ctx)
			if err != nil || !slices.Contains(all, outside) || len(all) != 3 {
				t.Errorf("QueryAllValidPaths after nix-store --add = %v, %v; want it to hold %s", all, err, outside)
			}

			// Roots.
			if err := c.AddTempRoot(ctx, top.Path); err != nil {
				t.Error(err)
			}
			link := filepath.Join(t.TempDir(), "result")
			if err := os.Symlink(top.Path.Abs(storeDir), link); err != nil {
				t.Fatal(err)
			}
			if err := c.AddIndirectRoot(ctx, link); err != nil {
				t.Error(err)
			}
			auto, _ := filepath.Glob(filepath.Join(s.root, "nix/var/nix/gcroots/auto/*"))
			found := false
			for _, a := range auto {
				if target, _ := os.Readlink(a); target == link {
					found = true
				}
			}
			if !found {
				t.Errorf("no gcroots/auto link to %s among %q", link, auto)
			}
		})
	}
}

// failingReader fails after n bytes.
type failingReader struct {
	r io.Reader
	n int64
}

var errSource = errors.New("source broke")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errSource
	}
	p = p[:min(int64(len(p)), f.n)]
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestAddRefused checks that what the daemon or the client refuses leaves
// the store as it was.
func TestAddRefused(t *testing.T) {
	overTransports(t, testAddRefused)
}

func testAddRefused(t *testing.T, transport string) {
	s := newTestStoreOver(t, transport)
	ctx := context.Background()
	base, baseNAR := sourceInfo(t, tree{"f": "base\n"}.write(t), "base", nil)
	if err := add(ctx, s.client(t, Options{}), base, baseNAR, true); err != nil {
		t.Fatal(err)
	}
	dir := tree{"a": "aaa\n", "big": strings.Repeat("big\n", 1<<19)}.write(t)

	for _, tc := range []struct {
		name   string
		change func(pi *nix.PathInfo)
		nar    func(io.Reader) io.Reader
		check  bool   // check signatures
		want   string // in the DaemonError; "" for a client error
		source error  // the client error
	}{
		{name: "missing reference", change: func(pi *nix.PathInfo) {
			pi.References = []nix.Path{base.Path, ghost}
			pi.CA = "" // its path is not the CA path of these refs
		}, want: "path '" + ghost.Abs(storeDir) + "' is not valid"},
		{name: "wrong narHash", change: func(pi *nix.PathInfo) { pi.NarHash[0] ^= 1; pi.CA = "" },
			want: "hash mismatch importing path"},
		{name: "no signature", change: func(pi *nix.PathInfo) { pi.CA = "" }, check: true,
			want: "lacks a valid signature"},
		{name: "source fails", nar: func(r io.Reader) io.Reader { return &failingReader{r: r, n: 1 << 20} },
			source: errSource},
		{name: "NAR shorter than narSize", change: func(pi *nix.PathInfo) { pi.NarSize++ }},
		{name: "NAR longer than narSize", change: func(pi *nix.PathInfo) { pi.NarSize-- }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, nar := sourceInfo(t, dir, "refused-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			if tc.change != nil {
				tc.change(info)
			}
			f, err := os.Open(nar)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var r io.Reader = f
			if tc.nar != nil {
				r = tc.nar(r)
			}
			c := s.client(t, Options{})
			err = c.AddToStoreNar(ctx, info, r, !tc.check)
			var de *DaemonError
			switch {
			case err == nil:
				t.Fatal("AddToStoreNar succeeded")
			case tc.want != "":
				if !errors.As(err, &de) || de.Op != "AddToStoreNar" || !strings.Contains(de.Msg, tc.want) || strings.Contains(de.Msg, "\x1b") {
					t.Fatalf("AddToStoreNar: %#v; want a DaemonError with %q", err, tc.want)
				}
				// The daemon said no properly: the connection goes on.
				if ok, err := c.IsValidPath(ctx, base.Path); err != nil || !ok {
					t.Errorf("IsValidPath after the refusal = %v, %v", ok, err)
				}
			default:
				if errors.As(err, &de) || tc.source != nil && !errors.Is(err, tc.source) {
					t.Fatalf("AddToStoreNar: %v; want the source's error %v", err, tc.source)
				}
				if _, err := c.IsValidPath(ctx, base.Path); !errors.Is(err, ErrClosed) {
					t.Errorf("IsValidPath after a source error = %v; want ErrClosed", err)
				}
			}
			t.Logf("refused: %v", err)
			c2 := s.client(t, Options{})
			if ok, err := c2.IsValidPath(ctx, info.Path); err != nil || ok {
				t.Errorf("IsValidPath(refused path) = %v, %v", ok, err)
			}
			if _, err := os.Lstat(filepath.Join(s.root, info.Path.Abs(storeDir))); err == nil {
				t.Logf("the daemon left %s (invalid) on disk", info.Path)
			}
			if all, err := c2.QueryAllValidPaths(ctx); err != nil || !slices.Equal(all, []nix.Path{base.Path}) {
				t.Errorf("QueryAllValidPaths = %v, %v; want only %s", all, err, base.Path)
			}
		})
	}
}

// cancelWriter cancels a context on its first write.
type cancelWriter struct{ cancel context.CancelFunc }

func (w cancelWriter) Write(p []byte) (int, error) { w.cancel(); return len(p), nil }

func TestCancelCloses(t *testing.T) {
	overTransports(t, testCancelCloses)
}

func testCancelCloses(t *testing.T, transport string) {
	s := newTestStoreOver(t, transport)
	c := s.client(t, Options{})
	dir := t.TempDir()
	randomFile(t, dir, 64<<20)
	info, nar := sourceInfo(t, dir, "big", nil)
	if err := add(context.Background(), c, info, nar, true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err := c.NarFromPath(ctx, info.Path, cancelWriter{cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("NarFromPath with a canceled context = %v", err)
	}
	if _, err := c.IsValidPath(context.Background(), info.Path); !errors.Is(err, ErrClosed) {
		t.Errorf("IsValidPath after the cancel = %v; want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

func TestStripANSI(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                                "plain",
		"path '\x1b[35;1m/nix/store/x\x1b[0m'": "path '/nix/store/x'",
		"\x1b[31;1merror:\x1b[0m bad":          "error: bad",
		"dangling \x1b[":                       "dangling \x1b[",
	} {
		if got := stripANSI(in); got != want {
			t.Errorf("stripANSI(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCancelSilentDaemon cancels an operation the daemon never answers;
// it needs no Nix.
func TestCancelSilentDaemon(t *testing.T) {
	cli, srv := net.Pipe()
	defer srv.Close()
	go io.Copy(io.Discard, srv) // read requests, never answer them
	go func() {
		w := &writer{w: bufio.NewWriter(srv)}
		w.u64(workerMagic2)
		w.u64(protocolVersion)
		w.str("2.8.0")
		w.u64(stderrLast)
		w.flush()
	}()
	c, err := newClient(context.Background(), cli, cli, cli, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if dv := c.DaemonVersion(); dv != "2.8.0" {
		t.Errorf("DaemonVersion() = %q", dv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.IsValidPath(ctx, ghost); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("IsValidPath = %v; want DeadlineExceeded", err)
	}
	if _, err := c.QueryAllValidPaths(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("QueryAllValidPaths after the cancel = %v; want ErrClosed", err)
	}
}

// TestConcurrent shares one Client between goroutines.
func TestConcurrent(t *testing.T) {
	overTransports(t, testConcurrent)
}

func testConcurrent(t *testing.T, transport string) {
	s := newTestStoreOver(t, transport)
	c := s.client(t, Options{})
	ctx := context.Background()
	info, nar := sourceInfo(t, tree{"f": "shared\n"}.write(t), "shared", nil)
	if err := add(ctx, c, info, nar, true); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if pi, err := c.QueryPathInfo(ctx, info.Path); err != nil || pi.NarHash != info.NarHash {
					t.Errorf("QueryPathInfo = %v, %v", pi, err)
				}
				if err := c.NarFromPath(ctx, info.Path, io.Discard); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}
