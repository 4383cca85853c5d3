package nixcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/trove-p2p/trove/manifest"
)

// Source finds store paths the local store lacks and fetches them into it.
type Source interface {
	// Find returns the store path named by h if it can be fetched. An error
	// wrapping ErrNotFound means it cannot be had: the answer is a 404.
	Find(ctx context.Context, h nix.PathHash) (nix.Path, error)
	// Fetch makes the closure of p valid in the store. An error wrapping
	// ErrNotFound means it cannot be had (nothing vouches for it, say).
	Fetch(ctx context.Context, p nix.Path) error
}

// ErrNotFound is wrapped by a Source's errors for paths it cannot provide.
var ErrNotFound = errors.New("not found")

// DefaultTimeout is how long a Source may look for a path by default.
const DefaultTimeout = 5 * time.Second

// DefaultPriority is announced in nix-cache-info: lower wins, and
// cache.nixos.org announces 40, so Nix asks the swarm first.
const DefaultPriority = 30

// maxFinds bounds the Source lookups in flight; more requests wait.
const maxFinds = 64

// Config configures a Handler.
type Config struct {
	Store Store
	// Key, if set, signs every narinfo served, beside the signatures the
	// path already has. A Nix client that trusts its public key believes
	// everything this endpoint serves.
	Key *manifest.SecretKey
	// Source, if set, is asked for paths the store lacks; they are fetched,
	// then served. Nil serves only what the store holds.
	Source Source
	// Timeout bounds Source.Find (default DefaultTimeout). Fetching a path
	// once found is bounded only by its progress: a sync whose peers all
	// stall fails.
	Timeout time.Duration
	// Priority is announced in nix-cache-info (0 means DefaultPriority).
	Priority int
	Logger   *slog.Logger
}

// Handler serves the Nix binary-cache protocol from a store: GET and HEAD
// of /nix-cache-info, /<hash32>.narinfo and /nar/<hash32>-<narhash>.nar,
// the NARs streamed from the store's trees (a single byte range may be
// asked for). It is safe for concurrent use.
type Handler struct {
	cfg       Config
	ctx       context.Context // bounds fetches from the Source
	log       *slog.Logger
	cacheInfo []byte
	finds     chan struct{}

	mu      sync.Mutex // guards flights
	flights map[nix.PathHash]*flight
}

var _ http.Handler = (*Handler)(nil)

// flight is one lookup and fetch of a missing path, shared by every request
// for that path while it runs.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// New returns a Handler. Fetches from cfg.Source stop when ctx ends.
func New(ctx context.Context, cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("nixcache: no store")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("nixcache: negative timeout %s", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Priority == 0 {
		cfg.Priority = DefaultPriority
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	info := fmt.Sprintf("StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", cfg.Store.StoreDir(), cfg.Priority)
	return &Handler{
		cfg: cfg, ctx: ctx, log: cfg.Logger, cacheInfo: []byte(info),
		finds: make(chan struct{}, maxFinds), flights: map[nix.PathHash]*flight{},
	}, nil
}

// ServeHTTP answers one request. Names are parsed strictly and only the
// store path hash in them is used to look a path up, so no request can name
// a file: anything else is a 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	// No valid name needs escaping: "%2e%2e" and friends are refused
	// before anything decodes them into a path.
	if strings.ContainsRune(r.URL.EscapedPath(), '%') || strings.ContainsRune(r.URL.RawPath, '%') {
		http.Error(w, "percent-encoded paths are not served", http.StatusBadRequest)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/nix-cache-info":
		h.writeSmall(w, r, "text/x-nix-cache-info", h.cacheInfo)
	case strings.HasSuffix(p, ".narinfo"):
		ph, err := nix.ParsePathHash(strings.TrimSuffix(strings.TrimPrefix(p, "/"), ".narinfo"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		h.serveNarInfo(w, r, ph)
	case strings.HasPrefix(p, "/nar/"):
		ph, nh, ok := parseNARName(strings.TrimPrefix(p, "/nar/"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		h.serveNAR(w, r, ph, nh)
	default:
		http.NotFound(w, r)
	}
}

// narURL is where the handler serves pi's NAR: nar/<path hash>-<narHash>.nar.
// The path hash finds the path; the narHash keeps a cached URL from ever
// meaning other bytes.
func narURL(pi *nix.PathInfo) string {
	return "nar/" + pi.Path.Hash.String() + "-" + nixbase32.EncodeToString(pi.NarHash[:]) + ".nar"
}

// parseNARName takes exactly "<32 nix32>-<52 nix32>.nar".
func parseNARName(name string) (nix.PathHash, nix.Hash, bool) {
	var nh nix.Hash
	base, ok := strings.CutSuffix(name, ".nar")
	if !ok || len(base) != 32+1+52 || base[32] != '-' {
		return nix.PathHash{}, nh, false
	}
	ph, err := nix.ParsePathHash(base[:32])
	if err != nil {
		return ph, nh, false
	}
	b, err := nixbase32.DecodeString(base[33:])
	if err != nil || len(b) != len(nh) {
		return ph, nh, false
	}
	copy(nh[:], b)
	return ph, nh, true
}

func (h *Handler) writeSmall(w http.ResponseWriter, r *http.Request, ctype string, body []byte) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func (h *Handler) serveNarInfo(w http.ResponseWriter, r *http.Request, ph nix.PathHash) {
	pi, err := h.pathInfo(r.Context(), ph)
	if err != nil {
		h.fail(w, r, ph, err)
		return
	}
	h.writeSmall(w, r, "text/x-nix-narinfo", h.narInfo(pi).Encode(h.cfg.Store.StoreDir()))
}

// narInfo describes pi as served here: uncompressed, with pi's own
// signatures and one by the handler's key (replacing an older one by a key
// of the same name).
func (h *Handler) narInfo(pi *nix.PathInfo) *NarInfo {
	info := *pi
	info.Sigs = nil
	for _, s := range pi.Sigs {
		if h.cfg.Key == nil || !strings.HasPrefix(s, h.cfg.Key.Name+":") {
			info.Sigs = append(info.Sigs, s)
		}
	}
	if h.cfg.Key != nil {
		info.Sigs = append(info.Sigs, h.cfg.Key.Sign(pi.Fingerprint(h.cfg.Store.StoreDir())))
	}
	return &NarInfo{
		Info: info, URL: narURL(pi), Compression: "none",
		FileHash: pi.NarHash, FileSize: pi.NarSize,
	}
}

func (h *Handler) serveNAR(w http.ResponseWriter, r *http.Request, ph nix.PathHash, nh nix.Hash) {
	pi, err := h.pathInfo(r.Context(), ph)
	if err != nil {
		h.fail(w, r, ph, err)
		return
	}
	if pi.NarHash != nh {
		// A NAR this store does not have: an older build's, or a guess.
		http.NotFound(w, r)
		return
	}
	size := int64(pi.NarSize)
	etag := `"` + nixbase32.EncodeToString(nh[:]) + `"`
	off, n, partial, ok := parseRange(r.Header.Get("Range"), size)
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		off, n, partial, ok = 0, size, false, true // changed since: send it all
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/x-nix-nar")
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("ETag", etag) // the NAR's hash: its bytes never change
	if !ok {
		hd.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		http.Error(w, "requested range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	hd.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if err := h.cfg.Store.WriteNAR(r.Context(), w, pi.Path, off, n); err != nil {
		if r.Context().Err() == nil {
			h.log.Warn("serving a NAR failed", "path", pi.Path.Abs(h.cfg.Store.StoreDir()), "err", err)
		}
		// The status is sent; cut the connection so the client sees a
		// truncated body rather than a short one it might believe.
		panic(http.ErrAbortHandler)
	}
}

// parseRange reads a Range header for a body of size bytes. It returns the
// range to send and whether it is partial; ok is false when the range
// cannot be satisfied (416). A malformed header or several ranges are
// ignored (the whole body is sent), as RFC 9110 allows.
func parseRange(hdr string, size int64) (off, n int64, partial, ok bool) {
	spec, found := strings.CutPrefix(hdr, "bytes=")
	if hdr == "" || !found || strings.Contains(spec, ",") {
		return 0, size, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, size, false, true
	}
	num := func(s string) (int64, bool) {
		if s == "" || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil
	}
	if first == "" { // the last N bytes
		v, okN := num(last)
		if !okN {
			return 0, size, false, true
		}
		if v == 0 {
			return 0, 0, false, false
		}
		v = min(v, size)
		return size - v, v, true, true
	}
	a, okA := num(first)
	if !okA {
		return 0, size, false, true
	}
	b := size - 1
	if last != "" {
		v, okB := num(last)
		if !okB || v < a {
			return 0, size, false, true
		}
		b = min(v, size-1)
	}
	if a >= size {
		return 0, 0, false, false
	}
	return a, b - a + 1, true, true
}

// pathInfo returns the info of the valid path named by ph, fetching it from
// the Source first when the store lacks it.
func (h *Handler) pathInfo(ctx context.Context, ph nix.PathHash) (*nix.PathInfo, error) {
	pi, err := h.cfg.Store.PathInfo(ph)
	if err == nil || !errors.Is(err, nix.ErrNotValid) || h.cfg.Source == nil {
		return pi, err
	}
	if err := h.fetch(ctx, ph); err != nil {
		return nil, err
	}
	return h.cfg.Store.PathInfo(ph)
}

// fetch waits for the flight that looks for ph and fetches it, starting one
// if none runs. The flight outlives the request that started it, so a Nix
// client that gives up does not fail the others waiting for the same path.
func (h *Handler) fetch(ctx context.Context, ph nix.PathHash) error {
	h.mu.Lock()
	f, ok := h.flights[ph]
	if !ok {
		f = &flight{done: make(chan struct{})}
		h.flights[ph] = f
		go h.fly(ph, f)
	}
	h.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errBusy = errors.New("too many lookups in flight; try again")

func (h *Handler) fly(ph nix.PathHash, f *flight) {
	defer func() {
		h.mu.Lock()
		delete(h.flights, ph)
		h.mu.Unlock()
		close(f.done)
	}()
	start := time.Now()
	fctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	select {
	case h.finds <- struct{}{}:
	case <-fctx.Done():
		cancel()
		f.err = errBusy
		return
	}
	p, err := h.cfg.Source.Find(fctx, ph)
	<-h.finds
	cancel()
	if err != nil {
		if h.ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %s: nobody had it within %s", ErrNotFound, ph, h.cfg.Timeout)
		}
		f.err = err
		h.log.Debug("not found elsewhere", "hash", ph, "took", time.Since(start), "err", err)
		return
	}
	h.log.Info("fetching for a Nix client", "path", p.Abs(h.cfg.Store.StoreDir()))
	if err := h.cfg.Source.Fetch(h.ctx, p); err != nil {
		f.err = err
		h.log.Warn("fetching for a Nix client failed", "path", p.Abs(h.cfg.Store.StoreDir()), "err", err)
		return
	}
	h.log.Info("fetched for a Nix client", "path", p.Abs(h.cfg.Store.StoreDir()), "took", time.Since(start))
}

// fail answers a request for a path that could not be served: 404 when it
// is absent (Nix then treats the path as not in this cache), otherwise an
// error status, which Nix reports rather than caching as absent.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, ph nix.PathHash, err error) {
	switch {
	case errors.Is(err, nix.ErrNotValid) || errors.Is(err, ErrNotFound):
		http.NotFound(w, r)
	case errors.Is(err, errBusy) || h.ctx.Err() != nil || r.Context().Err() != nil:
		http.Error(w, "trove: "+err.Error(), http.StatusServiceUnavailable)
	default:
		h.log.Warn("cannot serve a path", "hash", ph, "err", err)
		http.Error(w, fmt.Sprintf("trove: cannot serve %s: %v", ph, err), http.StatusBadGateway)
	}
}
