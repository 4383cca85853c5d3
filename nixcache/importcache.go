package nixcache

import (
	"bufio"
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/trust"
)

// errMissing is wrapped when a cache has no such file.
var errMissing = fs.ErrNotExist

// DefaultImportTimeout is how long an import from an HTTP cache waits, by
// default, for a response or for the next bytes of one.
const DefaultImportTimeout = 60 * time.Second

// ErrStalled is wrapped when an HTTP cache sends nothing for longer than
// the import's timeout.
var ErrStalled = errors.New("the cache stalled")

// An ImportOption tunes ImportCache.
type ImportOption func(*importConfig) error

type importConfig struct {
	timeout time.Duration
}

// WithTimeout bounds how long an import from an HTTP cache waits for a
// response's headers and, while reading a body, for its next bytes (an
// idle timeout: a large NAR that keeps arriving never times out). The
// default is DefaultImportTimeout.
func WithTimeout(d time.Duration) ImportOption {
	return func(c *importConfig) error {
		if d <= 0 {
			return fmt.Errorf("timeout %v: must be positive", d)
		}
		c.timeout = d
		return nil
	}
}

// ImportCache copies the closures of paths from the Nix binary cache at
// cacheURL (file:///DIR, http:// or https://) into s, references first.
//
// It reads every narinfo of the closures before it downloads a NAR, and
// with requireSigs refuses the whole import unless each path is signed by
// a key in keys or is content-addressed with an address that recomputes to
// its name. Every NAR is checked against its narHash and size as it is
// unpacked; a path becomes valid only after its references. Paths already
// valid in s are skipped with their closures. It returns the paths added.
//
// An HTTP cache that sends nothing for the timeout (see WithTimeout) fails
// the import with an error wrapping ErrStalled; as on any failure, the
// paths not yet added leave nothing behind.
func ImportCache(ctx context.Context, s Target, keys *manifest.Keyring, cacheURL string, paths []nix.Path, requireSigs bool, opts ...ImportOption) ([]*nix.PathInfo, error) {
	cfg := importConfig{timeout: DefaultImportTimeout}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	c, err := openCache(cacheURL, cfg.timeout)
	if err != nil {
		return nil, err
	}
	if err := c.checkStoreDir(ctx, s.StoreDir()); err != nil {
		return nil, err
	}
	infos, err := c.closure(ctx, s, paths)
	if err != nil {
		return nil, err
	}
	belief := trust.New(s.StoreDir(), keys)
	belief.BelieveAll = !requireSigs
	var untrusted []string
	var why error // the first path's reason
	for _, ni := range infos {
		if err := checkCompression(ni.Compression); err != nil {
			return nil, fmt.Errorf("%s: %w", ni.Info.Path.Abs(s.StoreDir()), err)
		}
		if _, ok := c.narURL(ni.URL); !ok {
			return nil, fmt.Errorf("%s: NAR URL %q cannot be read from %s", ni.Info.Path.Abs(s.StoreDir()), ni.URL, c)
		}
		if err := belief.Believe(&ni.Info); err != nil {
			untrusted = append(untrusted, ni.Info.Path.Abs(s.StoreDir()))
			if why == nil {
				why = err
			}
		}
	}
	if len(untrusted) > 0 {
		// The first path says why; the others are named.
		others := ""
		if rest := untrusted[1:]; len(rest) > 0 {
			more := ""
			if len(rest) > 3 {
				more = fmt.Sprintf(" and %d more", len(rest)-3)
				rest = rest[:3]
			}
			others = fmt.Sprintf("; so are %s%s", strings.Join(rest, ", "), more)
		}
		return nil, fmt.Errorf("%w%s; trust the cache's public key with `trove trust add NAME:KEY` (or, if you know what you are doing, pass --no-check-sigs)", why, others)
	}
	order, err := referencesFirst(s.StoreDir(), infos)
	if err != nil {
		return nil, err
	}
	return c.importAll(ctx, s, order)
}

// binaryCache reads the files of a Nix binary cache.
type binaryCache struct {
	dir    string   // for file://
	base   *url.URL // for http(s)://, ending in "/"
	client *http.Client
	// timeout bounds each wait on an HTTP cache: for a response's
	// headers, and for each read of its body.
	timeout time.Duration
}

func (c *binaryCache) String() string {
	if c.base != nil {
		return c.base.String()
	}
	return "file://" + c.dir
}

func openCache(cacheURL string, timeout time.Duration) (*binaryCache, error) {
	u, err := url.Parse(cacheURL)
	if err != nil {
		return nil, fmt.Errorf("cache URL %q: %w", cacheURL, err)
	}
	// A query holds Nix store settings (?compression=..., ?trusted=...),
	// which mean nothing to a reader.
	u.RawQuery, u.Fragment = "", ""
	switch u.Scheme {
	case "file":
		dir := u.Host + u.Path // file://DIR as Nix writes it; DIR must be absolute
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("cache URL %q: a file URL needs an absolute directory, as in file:///var/cache/nix", cacheURL)
		}
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("cache %s: %w", cacheURL, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("cache %s: not a directory", cacheURL)
		}
		return &binaryCache{dir: filepath.Clean(dir)}, nil
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("cache URL %q: no host", cacheURL)
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		return &binaryCache{base: u, client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, timeout: timeout}, nil
	}
	return nil, fmt.Errorf("cache URL %q: want file:///DIR, http:// or https://", cacheURL)
}

// narURL resolves a narinfo's URL (checked by ParseNarInfo) against the
// cache: a file cache reads only relative paths, without a query.
func (c *binaryCache) narURL(rel string) (string, bool) {
	abs := strings.HasPrefix(rel, "http://") || strings.HasPrefix(rel, "https://")
	if c.base == nil {
		return rel, !abs && !strings.Contains(rel, "?")
	}
	if abs {
		return rel, true
	}
	ref, err := url.Parse(rel)
	if err != nil {
		return "", false
	}
	return c.base.ResolveReference(ref).String(), true
}

// open opens the file rel (a relative URL checked by checkURL, or an
// absolute http(s) URL for an http cache). A missing file wraps errMissing.
func (c *binaryCache) open(ctx context.Context, rel string) (io.ReadCloser, error) {
	target, ok := c.narURL(rel)
	if !ok {
		return nil, fmt.Errorf("%q cannot be read from %s", rel, c)
	}
	if c.base == nil {
		f, err := os.Open(filepath.Join(c.dir, filepath.FromSlash(target)))
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	// One timer watches the whole request: it runs while waiting for the
	// response and during each read of the body, and cancels the request
	// if it fires.
	ctx, cancel := context.WithCancelCause(ctx)
	stalled := fmt.Errorf("GET %s: nothing received for %v: %w; if the cache is only slow, allow it longer with --timeout", target, c.timeout, ErrStalled)
	timer := time.AfterFunc(c.timeout, func() { cancel(stalled) })
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		timer.Stop()
		cancel(nil)
		return nil, err
	}
	resp, err := c.client.Do(req)
	timer.Stop()
	if err != nil {
		cancel(nil)
		return nil, idleCause(ctx, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return &idleBody{ctx: ctx, cancel: cancel, body: resp.Body, timer: timer, timeout: c.timeout}, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %s: %w", target, resp.Status, errMissing)
	default:
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %s", target, resp.Status)
	}
}

// idleBody is a response body whose reads fail once the cache has sent
// nothing for timeout: the timer runs only while a read waits, so a slow
// reader (a full disk being written, say) is not mistaken for a stalled
// cache.
type idleBody struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	body    io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.timeout)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF {
		err = idleCause(b.ctx, err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.body.Close()
}

// idleCause is err, or the stall that cancelled ctx and so caused it.
func idleCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		return cause
	}
	return err
}

// readSmall reads a whole small file of the cache.
func (c *binaryCache) readSmall(ctx context.Context, rel string) ([]byte, error) {
	rc, err := c.open(ctx, rel)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxNarInfoSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", rel, c, err)
	}
	return b, nil
}

// checkStoreDir refuses a cache for another store directory: its paths'
// names (and the bytes inside them) would be wrong here. A cache without
// nix-cache-info is taken to be for ours.
func (c *binaryCache) checkStoreDir(ctx context.Context, storeDir string) error {
	b, err := c.readSmall(ctx, "nix-cache-info")
	if errors.Is(err, errMissing) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "StoreDir: "); ok && strings.TrimSpace(v) != storeDir {
			return fmt.Errorf("cache %s holds paths for store dir %s, this store uses %s (--store-dir)", c, strings.TrimSpace(v), storeDir)
		}
	}
	return nil
}

// closure reads the narinfos of the closures of roots, except what is
// valid in s already, a level of references at a time.
func (c *binaryCache) closure(ctx context.Context, s Target, roots []nix.Path) (map[nix.PathHash]*NarInfo, error) {
	infos := map[nix.PathHash]*NarInfo{}
	seen := map[nix.PathHash]bool{}
	level := roots
	for len(level) > 0 {
		var want []nix.Path
		for _, p := range level {
			if seen[p.Hash] {
				continue
			}
			seen[p.Hash] = true
			if ok, err := s.IsValid(p); err != nil {
				return nil, err
			} else if !ok {
				want = append(want, p)
			}
		}
		got := make([]*NarInfo, len(want))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for i, p := range want {
			g.Go(func() error {
				ni, err := c.narInfo(gctx, s.StoreDir(), p)
				got[i] = ni
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		level = nil
		for _, ni := range got {
			infos[ni.Info.Path.Hash] = ni
			level = append(level, ni.Info.References...)
		}
	}
	return infos, nil
}

func (c *binaryCache) narInfo(ctx context.Context, storeDir string, p nix.Path) (*NarInfo, error) {
	where := p.Abs(storeDir)
	b, err := c.readSmall(ctx, p.Hash.String()+".narinfo")
	if errors.Is(err, errMissing) {
		return nil, fmt.Errorf("%s: not in the cache %s", where, c)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	ni, err := ParseNarInfo(storeDir, b)
	if err != nil {
		return nil, fmt.Errorf("%s: the cache's narinfo: %w", where, err)
	}
	if ni.Info.Path != p {
		return nil, fmt.Errorf("%s: the cache's narinfo describes %s instead", where, ni.Info.Path.Abs(storeDir))
	}
	return ni, nil
}

// referencesFirst orders infos so that every path comes after the paths it
// references, refusing a reference cycle (which no real store has, and
// which would never become valid).
func referencesFirst(storeDir string, infos map[nix.PathHash]*NarInfo) ([]*NarInfo, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[nix.PathHash]int{}
	var order []*NarInfo
	var visit func(ni *NarInfo) error
	visit = func(ni *NarInfo) error {
		h := ni.Info.Path.Hash
		switch state[h] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("the cache's references form a cycle through %s", ni.Info.Path.Abs(storeDir))
		}
		state[h] = visiting
		for _, r := range ni.Info.References {
			if dep, ok := infos[r.Hash]; ok && r != ni.Info.Path {
				if err := visit(dep); err != nil {
					return err
				}
			}
		}
		state[h] = done
		order = append(order, ni)
		return nil
	}
	// Map order is random; sort for a reproducible order.
	keys := make([]*NarInfo, 0, len(infos))
	for _, ni := range infos {
		keys = append(keys, ni)
	}
	slices.SortFunc(keys, func(a, b *NarInfo) int { return a.Info.Path.Compare(b.Info.Path) })
	for _, ni := range keys {
		if err := visit(ni); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// importAll downloads and adds order's paths, a few at a time; each waits
// for the paths it references. order is references-first, so the paths
// holding a slot never wait on one that has none: no deadlock.
func (c *binaryCache) importAll(ctx context.Context, s Target, order []*NarInfo) ([]*nix.PathInfo, error) {
	done := make(map[nix.PathHash]chan struct{}, len(order))
	for _, ni := range order {
		done[ni.Info.Path.Hash] = make(chan struct{})
	}
	var mu sync.Mutex
	var added []*nix.PathInfo
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, ni := range order {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			for _, r := range ni.Info.References {
				if ch, ok := done[r.Hash]; ok && r != ni.Info.Path {
					select {
					case <-ch:
					case <-gctx.Done():
						return gctx.Err()
					}
				}
			}
			pi, err := c.importOne(gctx, s, ni)
			if err != nil {
				return err
			}
			mu.Lock()
			added = append(added, pi)
			mu.Unlock()
			close(done[ni.Info.Path.Hash])
			return nil
		})
	}
	err := g.Wait()
	return added, err
}

func (c *binaryCache) importOne(ctx context.Context, s Target, ni *NarInfo) (*nix.PathInfo, error) {
	where := ni.Info.Path.Abs(s.StoreDir())
	rc, err := c.open(ctx, ni.URL)
	if err != nil {
		return nil, fmt.Errorf("%s: its NAR: %w", where, err)
	}
	defer rc.Close()
	nar, err := decompress(ni.Compression, bufio.NewReaderSize(rc, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("%s: its NAR: %w", where, err)
	}
	defer nar.Close()
	info := ni.Info
	// The NAR may not run past its stated size: a lying cache fills no
	// more disk than the narinfo admits to before AddNAR refuses it.
	pi, err := s.AddNAR(ctx, &info, &sizeLimit{r: nar, n: ni.Info.NarSize})
	if err != nil {
		return nil, fmt.Errorf("importing from %s: %w", c, err)
	}
	return pi, nil
}

// sizeLimit reads at most n bytes of r, and fails if r has more but its
// reader asks for them.
type sizeLimit struct {
	r io.Reader
	n uint64
}

func (l *sizeLimit) Read(p []byte) (int, error) {
	if l.n == 0 {
		var one [1]byte
		if k, _ := io.ReadFull(l.r, one[:]); k > 0 {
			return 0, fmt.Errorf("%w: the NAR is longer than the NarSize its narinfo states", nix.ErrHashMismatch)
		}
		return 0, io.EOF
	}
	if uint64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= uint64(k)
	return k, err
}

// ErrUnsupportedCompression is wrapped for NARs compressed in a way trove
// cannot read.
var ErrUnsupportedCompression = errors.New("unsupported compression")

func checkCompression(kind string) error {
	switch kind {
	case "none", "xz", "zstd", "bzip2":
		return nil
	}
	return fmt.Errorf("%w %s (trove reads none, xz, zstd and bzip2; recompress the cache with `nix copy --to 'file:///DIR?compression=zstd'`)", ErrUnsupportedCompression, kind)
}

// decompress undoes a narinfo's Compression.
func decompress(kind string, r io.Reader) (io.ReadCloser, error) {
	switch kind {
	case "none":
		return io.NopCloser(r), nil
	case "xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case "zstd":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return d.IOReadCloser(), nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	}
	return nil, checkCompression(kind)
}
