package store

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixdaemon"
)

// The Nix backend: a Store whose valid paths are those of the machine's
// Nix store. Nix is the authority on what is valid and holds every tree
// once, in its store; paths are read through the daemon's worker protocol
// and trees are read straight from disk, and paths are added through the
// daemon, which restores, hashes and registers them itself. trove's
// database keeps only what Nix lacks: chunk indexes, chunk locations and
// skeletons, each recorded against the narHash and registration time Nix
// had when it was computed, so a path Nix deletes or replaces is indexed
// afresh (or forgotten) rather than served wrong.

// Backend names, as --store and config.toml's store take them.
const (
	BackendEmbedded = "embedded"
	BackendNix      = "nix"
)

// NixOptions say which Nix store a Store with the Nix backend works on.
// The zero value is the machine's Nix: the daemon's socket when it
// answers, else (as root, on a single-user install) a private
// `nix-daemon --stdio` acting on the store directly.
type NixOptions struct {
	// Socket is the Nix daemon's socket; nixdaemon.DefaultSocket if empty.
	Socket string
	// StoreURI, when set, runs a private `nix-daemon --stdio --store
	// StoreURI` instead (tests use "local?root=DIR").
	StoreURI string
	// Root is where the store directory physically is, "" for /: trees
	// are read under Root+StoreDir (DIR for local?root=DIR).
	Root string
}

var (
	keyBackend = []byte("meta/backend")
	keyNixRoot = []byte("meta/nixroot") // the Nix store's root, "" for the machine's
	pfxNixRec  = []byte("x/")           // x/<hash> → nixRecord: what the index of a Nix path was computed against
)

// nixRecord says which Nix path (and which registration of it) the
// chunk index, chunk locations and skeleton stored under its hash
// describe.
type nixRecord struct {
	Path       string `json:"path"`
	NarHash    string `json:"narHash"`
	NarSize    uint64 `json:"narSize"`
	RegTime    int64  `json:"regTime"`
	ChunkIndex string `json:"chunkIndex"`
}

func (r *nixRecord) matches(pi *nix.PathInfo) bool {
	return r.Path == pi.Path.String() && r.NarHash == pi.NarHash.String() && r.NarSize == pi.NarSize &&
		r.RegTime == pi.RegistrationTime.Unix()
}

// nixBackend is the daemon side of a Nix-backed Store.
type nixBackend struct {
	opts NixOptions
	dir  string // the logical store dir
	open func(ctx context.Context) (*nixdaemon.Client, error)

	mu sync.Mutex
	// idle connections, each with when it was opened. Nix makes every
	// path added a temporary root of the connection that added it, so a
	// connection is retired after rootTTL: what trove delivered becomes
	// collectable once nothing else roots it, as with Nix's own
	// substitution.
	idle []pooled
	// Temporary roots keep Nix's garbage collector off the paths being
	// served or added. They last as long as the connection that made
	// them, so they are made on one connection that is replaced every
	// rootTTL (the old one is closed one period later), unless a Hold is
	// open: a path served now stays rooted for at least rootTTL after the
	// last time it was served.
	roots, oldRoots           *nixdaemon.Client
	rootsSince, oldRootsSince time.Time
	rooted                    map[nix.PathHash]bool
	// holds counts the open Holds: while one is, the temporary roots are
	// not replaced, and every path found valid is rooted too.
	holds int
}

// rootTTL is a var for tests.
var rootTTL = 5 * time.Minute

type pooled struct {
	c    *nixdaemon.Client
	born time.Time
}

// openNix connects to the Nix store opts names and checks that it uses
// storeDir.
func openNix(ctx context.Context, storeDir string, opts NixOptions) (*nixBackend, error) {
	b := &nixBackend{opts: opts, dir: storeDir, rooted: map[nix.PathHash]bool{}}
	dopts := nixdaemon.Options{StoreDir: storeDir}
	switch {
	case opts.StoreURI != "":
		if _, err := exec.LookPath("nix-daemon"); err != nil {
			return nil, errNixMissing()
		}
		b.open = func(ctx context.Context) (*nixdaemon.Client, error) {
			return nixdaemon.Start(ctx, opts.StoreURI, dopts)
		}
	default:
		socket := opts.Socket
		if socket == "" {
			socket = nixdaemon.DefaultSocket
		}
		c, err := nixdaemon.Dial(ctx, socket, dopts)
		if err == nil {
			b.idle = append(b.idle, pooled{c, time.Now()})
			b.open = func(ctx context.Context) (*nixdaemon.Client, error) { return nixdaemon.Dial(ctx, socket, dopts) }
			break
		}
		_, lookErr := exec.LookPath("nix-daemon")
		switch {
		case errors.Is(err, nixdaemon.ErrHungUp):
			// The daemon runs but turned this user away.
			return nil, fmt.Errorf("the Nix daemon turned this user away (%v): it lets only the users in allowed-users (and trusted-users) of nix.conf connect; add this user, or a group of theirs as @group, there", err)
		case lookErr != nil && errors.Is(err, os.ErrNotExist):
			return nil, errNixMissing()
		case os.Geteuid() != 0:
			return nil, fmt.Errorf("cannot reach the Nix daemon at %s (%v): start it (`systemctl start nix-daemon`), or run trove as root on a single-user Nix install, where it runs its own `nix-daemon --stdio`", socket, err)
		case lookErr != nil:
			return nil, fmt.Errorf("cannot reach the Nix daemon at %s (%v), and nix-daemon is not on PATH to run one: start the daemon, or put Nix's bin directory on PATH", socket, err)
		}
		// Root on a single-user install: the daemon's own code, run as a
		// child, acts on the store directly, so Nix stays the only
		// writer of its database whatever its version.
		b.open = func(ctx context.Context) (*nixdaemon.Client, error) { return nixdaemon.Start(ctx, "", dopts) }
	}
	if err := b.checkStoreDir(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func errNixMissing() error {
	return errors.New("Nix is not installed here (no nix-daemon on PATH and no daemon socket): install Nix, or use trove's embedded store (--store embedded)")
}

// checkStoreDir makes sure the daemon's store dir is trove's: a path in
// another directory is refused by the daemon as "not in the Nix store".
func (b *nixBackend) checkStoreDir(ctx context.Context) error {
	probe := nix.Path{Name: "trove-probe"}
	err := b.do(ctx, func(c *nixdaemon.Client) error {
		_, err := c.IsValidPath(ctx, probe)
		return err
	})
	var de *nixdaemon.DaemonError
	if errors.As(err, &de) && strings.Contains(de.Msg, "not in the Nix store") {
		return fmt.Errorf("this Nix uses another store dir than %s (%s): pass --store-dir with Nix's store dir (`nix eval --raw --expr builtins.storeDir`)", b.dir, de.Msg)
	}
	if err != nil {
		return fmt.Errorf("asking the Nix daemon: %w", err)
	}
	return nil
}

// do runs fn on an idle connection, or a new one. A connection whose
// error was not the daemon's answer is broken and closed, and so is one
// older than rootTTL (an agent calls do at least every IndexInterval).
func (b *nixBackend) do(ctx context.Context, fn func(c *nixdaemon.Client) error) error {
	b.mu.Lock()
	if c := b.rotateLocked(); c != nil {
		defer c.Close()
	}
	var retired []pooled
	fresh := b.idle[:0]
	for _, pc := range b.idle {
		if time.Since(pc.born) < rootTTL {
			fresh = append(fresh, pc)
		} else {
			retired = append(retired, pc)
		}
	}
	b.idle = fresh
	var pc pooled
	if n := len(b.idle); n > 0 {
		pc, b.idle = b.idle[n-1], b.idle[:n-1]
	}
	b.mu.Unlock()
	for _, r := range retired {
		r.c.Close()
	}
	if pc.c == nil {
		c, err := b.open(ctx)
		if err != nil {
			return fmt.Errorf("connecting to the Nix daemon: %w", err)
		}
		pc = pooled{c, time.Now()}
	}
	err := fn(pc.c)
	var de *nixdaemon.DaemonError
	if err != nil && !errors.As(err, &de) && !errors.Is(err, nix.ErrNotValid) {
		pc.c.Close()
		return err
	}
	b.mu.Lock()
	if len(b.idle) < 8 && time.Since(pc.born) < rootTTL {
		b.idle, pc.c = append(b.idle, pc), nil
	}
	b.mu.Unlock()
	if pc.c != nil {
		pc.c.Close()
	}
	return err
}

// rotateLocked replaces the temporary roots once they are rootTTL old,
// unless a Hold is open: the connection holding them is kept one period
// more, then closed, which drops its roots. It returns the connection to
// close, if any. The caller holds b.mu.
func (b *nixBackend) rotateLocked() (drop *nixdaemon.Client) {
	switch {
	case b.holds > 0:
	case b.roots != nil && time.Since(b.rootsSince) > rootTTL:
		drop = b.oldRoots
		b.oldRoots, b.oldRootsSince, b.roots = b.roots, time.Now(), nil
		clear(b.rooted)
	case b.oldRoots != nil && time.Since(b.oldRootsSince) > rootTTL:
		drop, b.oldRoots = b.oldRoots, nil
	}
	return drop
}

// tempRoot keeps p from Nix's garbage collector for at least rootTTL.
func (b *nixBackend) tempRoot(ctx context.Context, p nix.Path) error {
	b.mu.Lock()
	if c := b.rotateLocked(); c != nil {
		defer c.Close()
	}
	if b.rooted[p.Hash] {
		b.mu.Unlock()
		return nil
	}
	c := b.roots
	b.mu.Unlock()
	if c == nil {
		var err error
		if c, err = b.open(ctx); err != nil {
			return fmt.Errorf("connecting to the Nix daemon: %w", err)
		}
		b.mu.Lock()
		if b.roots != nil {
			c.Close()
			c = b.roots
		} else {
			b.roots, b.rootsSince = c, time.Now()
		}
		b.mu.Unlock()
	}
	if err := c.AddTempRoot(ctx, p); err != nil {
		b.mu.Lock()
		if b.roots == c {
			b.roots = nil
			clear(b.rooted)
		}
		b.mu.Unlock()
		c.Close()
		return err
	}
	b.mu.Lock()
	if b.roots == c {
		b.rooted[p.Hash] = true
	}
	b.mu.Unlock()
	return nil
}

func (b *nixBackend) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pc := range b.idle {
		pc.c.Close()
	}
	for _, c := range []*nixdaemon.Client{b.roots, b.oldRoots} {
		if c != nil {
			c.Close()
		}
	}
	b.idle, b.roots, b.oldRoots = nil, nil, nil
}

func (b *nixBackend) pathInfo(ctx context.Context, p nix.Path) (pi *nix.PathInfo, err error) {
	err = b.do(ctx, func(c *nixdaemon.Client) error {
		pi, err = c.QueryPathInfo(ctx, p)
		return err
	})
	if errors.Is(err, nix.ErrNotValid) {
		return nil, fmt.Errorf("%s: %w", p.Abs(b.dir), nix.ErrNotValid)
	}
	if err == nil {
		err = b.keep(ctx, p)
	}
	return pi, err
}

// hold starts a Hold; the function it returns ends it.
func (b *nixBackend) hold() (release func()) {
	b.mu.Lock()
	b.holds++
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.holds--
			b.mu.Unlock()
		})
	}
}

// keep roots p, found valid, while a Hold is open.
func (b *nixBackend) keep(ctx context.Context, p nix.Path) error {
	b.mu.Lock()
	held := b.holds > 0
	b.mu.Unlock()
	if !held {
		return nil
	}
	return b.tempRoot(ctx, p)
}

func (b *nixBackend) pathOf(ctx context.Context, h nix.PathHash) (p nix.Path, err error) {
	err = b.do(ctx, func(c *nixdaemon.Client) error {
		p, err = c.QueryPathFromHashPart(ctx, h)
		return err
	})
	if errors.Is(err, nix.ErrNotValid) {
		return p, fmt.Errorf("%s: %w", h, nix.ErrNotValid)
	}
	return p, err
}

func (b *nixBackend) isValid(ctx context.Context, p nix.Path) (ok bool, err error) {
	err = b.do(ctx, func(c *nixdaemon.Client) error {
		ok, err = c.IsValidPath(ctx, p)
		return err
	})
	if ok && err == nil {
		err = b.keep(ctx, p)
	}
	return ok, err
}

func (b *nixBackend) allValid(ctx context.Context) (ps []nix.Path, err error) {
	err = b.do(ctx, func(c *nixdaemon.Client) error {
		ps, err = c.QueryAllValidPaths(ctx)
		return err
	})
	return ps, err
}

// add streams a NAR into Nix's store. The daemon restores it, checks its
// narHash, size and content address itself, and registers it only if its
// references are valid; trove already believes info. The client holds r
// to info.NarSize bytes, so a short or long NAR never reaches the daemon
// whole.
func (b *nixBackend) add(ctx context.Context, info *nix.PathInfo, r io.Reader) error {
	// Rooted first, as Nix's own substitution does: the connection that
	// adds it roots it too, but only until that connection retires.
	if err := b.tempRoot(ctx, info.Path); err != nil {
		return err
	}
	err := b.do(ctx, func(c *nixdaemon.Client) error {
		return c.AddToStoreNar(ctx, info, r, true)
	})
	var de *nixdaemon.DaemonError
	switch {
	case errors.As(err, &de) && (strings.Contains(de.Msg, "hash mismatch") || strings.Contains(de.Msg, "size mismatch")):
		return fmt.Errorf("%w for %s: %s", nix.ErrHashMismatch, info.Path.Abs(b.dir), de.Msg)
	case errors.As(err, &de) && strings.Contains(de.Msg, "lacks a valid signature"):
		return fmt.Errorf("the Nix daemon refused %s: %s. trove believes it, but Nix adds unsigned paths only for root and its trusted-users: add this user to trusted-users in nix.conf, or add the publisher's key to Nix's trusted-public-keys", info.Path.Abs(b.dir), de.Msg)
	case errors.As(err, &de):
		return fmt.Errorf("the Nix daemon refused %s: %s", info.Path.Abs(b.dir), de.Msg)
	}
	return err
}

// The Store's methods for the Nix backend.

func (s *Store) nixRecord(h nix.PathHash) (*nixRecord, error) {
	var rec nixRecord
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key(pfxNixRec, h[:]))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) })
	})
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// withIndexID fills pi.ChunkIndex from the index recorded for it, if one
// is and it still describes the path Nix has.
func (s *Store) withIndexID(pi *nix.PathInfo) *nix.PathInfo {
	if rec, err := s.nixRecord(pi.Path.Hash); err == nil && rec.matches(pi) {
		pi.ChunkIndex, _ = chunk.ParseID(rec.ChunkIndex)
	}
	return pi
}

// nixIndex returns the chunk index of the Nix path pi, computing it from
// the tree (with its chunk locations and skeleton) if it was not, or if
// Nix replaced the path since.
func (s *Store) nixIndex(ctx context.Context, pi *nix.PathInfo) (chunk.Index, error) {
	if rec, err := s.nixRecord(pi.Path.Hash); err == nil && rec.matches(pi) {
		return s.storedIndex(pi.Path.Hash)
	}
	defer s.pathLock(pi.Path.Hash)()
	if rec, err := s.nixRecord(pi.Path.Hash); err == nil && rec.matches(pi) {
		return s.storedIndex(pi.Path.Hash)
	}
	tree := s.TreePath(pi.Path)
	var segs []nix.Segment
	if err := nix.WalkNAR(tree, func(g nix.Segment) error { segs = append(segs, g); return nil }); err != nil {
		return nil, fmt.Errorf("indexing %s: %w", tree, err)
	}
	sk := newSkeleton(segs)
	if uint64(sk.size) != pi.NarSize {
		return nil, fmt.Errorf("indexing %s: its tree makes a NAR of %d bytes, Nix says %d: the tree was changed behind Nix's back (`nix-store --verify --check-contents`)", tree, sk.size, pi.NarSize)
	}
	pr, pw := io.Pipe()
	go func() {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		pw.CloseWithError(sk.writeRange(ctxWriter{ctx, pw}, tree, 0, sk.size, *buf))
	}()
	ix, err := chunk.IndexNAR(pr)
	pr.CloseWithError(errors.New("indexing stopped"))
	if err != nil {
		return nil, fmt.Errorf("indexing %s: %w", tree, err)
	}
	return ix, s.recordNix(pi, ix, sk)
}

// recordNix stores the chunk index (and skeleton, when known) of Nix path
// pi, replacing what was recorded for an earlier registration of it. The
// record goes last, so an interrupted write leaves entries that Open (or
// the next index) removes.
func (s *Store) recordNix(pi *nix.PathInfo, ix chunk.Index, sk *skeleton) error {
	h := pi.Path.Hash
	if err := s.dropNix(h); err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := wb.Set(key(pfxIndex, h[:]), ix.Encode()); err != nil {
		return err
	}
	for i, off := range ix.Offsets() {
		id := ix[i].ID
		if err := wb.Set(key(pfxChunk, id[:], h[:]), binary.AppendUvarint(nil, off)); err != nil {
			return err
		}
	}
	if sk != nil {
		if err := wb.Set(key(pfxSkel, h[:]), sk.encode()); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	rec, _ := json.Marshal(nixRecord{Path: pi.Path.String(), NarHash: pi.NarHash.String(), NarSize: pi.NarSize,
		RegTime: pi.RegistrationTime.Unix(), ChunkIndex: ix.ID().String()})
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key(pfxNixRec, h[:]), rec) })
}

// dropNix forgets what is recorded of Nix path h.
func (s *Store) dropNix(h nix.PathHash) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key(pfxNixRec, h[:])) }); err != nil {
		return err
	}
	s.forgetSkeleton(h)
	return s.dropMetadata(h)
}

// nixTree returns the base name of the Nix path whose index is recorded
// under h, for finding its tree.
func nixTree(txn *badger.Txn, h nix.PathHash) (nix.Path, error) {
	item, err := txn.Get(key(pfxNixRec, h[:]))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nix.Path{}, fmt.Errorf("%s: %w", h, nix.ErrNotValid)
	}
	if err != nil {
		return nix.Path{}, err
	}
	var rec nixRecord
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
		return nix.Path{}, err
	}
	return nix.ParseBase(rec.Path)
}

// IndexStats is what Reindex did.
type IndexStats struct {
	Paths    int    // valid paths in Nix's store
	Indexed  int    // paths indexed now
	NARBytes uint64 // NAR bytes indexed now
	Dropped  int    // records of paths Nix no longer has
}

// Reindex brings trove's records up to date with Nix's store: it indexes
// every valid path not indexed yet (workers at a time) and forgets the
// records of paths Nix deleted. An index of a path Nix later replaces is
// redone when it is next used. It does nothing for the embedded store.
func (s *Store) Reindex(ctx context.Context, workers int) (IndexStats, error) {
	var st IndexStats
	if s.nix == nil {
		return st, nil
	}
	valid, indexed, dropped, err := s.forgetDeleted(ctx)
	if err != nil {
		return st, err
	}
	st.Paths, st.Dropped = len(valid), dropped
	var todo []nix.Path
	for _, p := range valid {
		if !indexed[p.Hash] {
			todo = append(todo, p)
		}
	}
	var mu sync.Mutex
	work := make(chan nix.Path)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				pi, err := s.nix.pathInfo(ctx, p)
				if err != nil {
					continue // deleted meanwhile
				}
				if _, err := s.nixIndex(ctx, pi); err != nil {
					if ctx.Err() == nil {
						s.log.Warn("cannot index a Nix path", "path", p.Abs(s.storeDir), "err", err)
					}
					continue
				}
				mu.Lock()
				st.Indexed++
				st.NARBytes += pi.NarSize
				mu.Unlock()
			}
		}()
	}
feed:
	for _, p := range todo {
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return st, ctx.Err()
}

// Backend is "nix" for a store on Nix's own store, else "embedded".
func (s *Store) Backend() string {
	if s.nix != nil {
		return BackendNix
	}
	return BackendEmbedded
}

// checkKind records the home's backend, and for the Nix backend which
// Nix store (its root, "" for the machine's), when the home is new, and
// refuses to open it as another. A Nix-backed home opened without naming
// a Nix store opens on the one it was made with: its records describe
// that store's paths, and a later command that forgot --nix-store must
// not quietly work on the machine's store instead.
func (s *Store) checkKind(want Kind) (Kind, error) {
	got := want
	err := s.db.Update(func(txn *badger.Txn) error {
		backend, ok, err := getMeta(txn, keyBackend)
		if err != nil {
			return err
		}
		if !ok {
			// A home made before backends were recorded holds an
			// embedded store if it holds anything.
			if got.Backend == "" {
				got.Backend = BackendEmbedded
			}
			if err := txn.Set(keyBackend, []byte(got.Backend)); err != nil {
				return err
			}
		} else {
			got.Backend = backend
		}
		if got.Backend != BackendNix {
			return nil
		}
		root, ok, err := getMeta(txn, keyNixRoot)
		switch {
		case err != nil:
			return err
		case !ok: // new, or made before Nix stores were recorded
			return txn.Set(keyNixRoot, []byte(want.Nix.Root))
		case want.Backend == "" || want.Nix == (NixOptions{}):
			if root != "" {
				got.Nix = NixOptions{StoreURI: "local?root=" + root, Root: root}
			}
		case want.Nix.Root != root:
			return fmt.Errorf("the trove home %s was made for %s, not %s: give --nix-store %s, or give --home another directory",
				s.home, nixStoreName(root), nixStoreName(want.Nix.Root), nixStoreArg(root))
		}
		return nil
	})
	if err != nil {
		return got, err
	}
	if want.Backend != "" && want.Backend != got.Backend {
		return got, fmt.Errorf("the trove home %s was made for the %s store, not the %s store: use it with --store %s, or give --home another directory for the %s store",
			s.home, got.Backend, want.Backend, got.Backend, want.Backend)
	}
	return got, nil
}

// getMeta reads a meta key; ok is false if it is not set.
func getMeta(txn *badger.Txn, k []byte) (v string, ok bool, err error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	b, err := item.ValueCopy(nil)
	return string(b), err == nil, err
}

// nixStoreName names the Nix store under root for people.
func nixStoreName(root string) string {
	if root == "" {
		return "the machine's Nix store"
	}
	return "the Nix store under " + root
}

// nixStoreArg is the --nix-store argument for the Nix store under root.
func nixStoreArg(root string) string {
	if root == "" {
		return "daemon"
	}
	return "local?root=" + root
}

// nixGCRoot makes p a root of Nix's garbage collector through a symlink
// in the home's gcroots directory, registered as an indirect root.
func (s *Store) nixGCRoot(ctx context.Context, p nix.Path, add bool) error {
	dir := filepath.Join(s.home, "gcroots")
	link := filepath.Join(dir, p.String())
	if !add {
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(p.Abs(s.storeDir), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		return err
	}
	return s.addIndirectRoot(ctx, link)
}

// addIndirectRoot registers the symlink link to a store path with Nix's
// garbage collector (gcroots/auto), which keeps the path while the link
// points at it and forgets the root once the link is gone.
func (s *Store) addIndirectRoot(ctx context.Context, link string) error {
	return s.nix.do(ctx, func(c *nixdaemon.Client) error { return c.AddIndirectRoot(ctx, link) })
}

// RootLink makes a profile's generation link, which points at p, a root
// of Nix's garbage collector, as nix-env does for each generation link it
// makes (an indirect root: Nix scans only its own profiles directory, so a
// profile elsewhere would otherwise lose its generations to
// nix-collect-garbage). The embedded store's GC is handed the profiles'
// roots by its caller (profile.Profiles.Roots), so it needs nothing here.
func (s *Store) RootLink(link string, p nix.Path) error {
	if s.nix == nil {
		return nil
	}
	ctx := context.Background()
	// Held until the indirect root counts, as Nix's addPermRoot does.
	if err := s.nix.tempRoot(ctx, p); err != nil {
		return err
	}
	return s.addIndirectRoot(ctx, link)
}

func (s *Store) nixRoots() ([]nix.Path, error) {
	ents, err := os.ReadDir(filepath.Join(s.home, "gcroots"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []nix.Path
	for _, e := range ents {
		if p, err := nix.ParseBase(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out, err
}

// nixServable reports whether the Nix path whose index is recorded under
// h (its tree at tree) may be read: it is still valid, and rooted so that
// Nix's garbage collector leaves it while it is served. The records of a
// path Nix deleted are dropped.
func (s *Store) nixServable(ctx context.Context, h nix.PathHash, tree string) bool {
	s.nix.mu.Lock()
	ok := s.nix.rooted[h]
	s.nix.mu.Unlock()
	if ok {
		return true
	}
	p, err := nix.ParseBase(filepath.Base(tree))
	if err != nil {
		return false
	}
	if err := s.nix.tempRoot(ctx, p); err != nil {
		s.log.Warn("cannot make a temporary root in Nix's store", "path", p.Abs(s.storeDir), "err", err)
		return false
	}
	if valid, err := s.nix.isValid(ctx, p); err == nil && !valid {
		if err := s.dropNix(h); err != nil {
			s.log.Warn("cannot forget a path Nix deleted", "path", p.Abs(s.storeDir), "err", err)
		}
		return false
	}
	return true
}

// walkSkeleton makes the skeleton of the Nix path h from its tree and
// records it, if its index still is.
func (s *Store) walkSkeleton(h nix.PathHash, tree string) (*skeleton, error) {
	var segs []nix.Segment
	if err := nix.WalkNAR(tree, func(g nix.Segment) error { segs = append(segs, g); return nil }); err != nil {
		return nil, err
	}
	sk := newSkeleton(segs)
	_ = s.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(key(pfxNixRec, h[:])); err != nil {
			return err
		}
		return txn.Set(key(pfxSkel, h[:]), sk.encode())
	})
	return sk, nil
}

// forgetDeleted drops the records of paths Nix no longer has. It returns
// Nix's valid paths and which of them have records.
func (s *Store) forgetDeleted(ctx context.Context) (valid []nix.Path, indexed map[nix.PathHash]bool, dropped int, err error) {
	if valid, err = s.nix.allValid(ctx); err != nil {
		return nil, nil, 0, err
	}
	inNix := map[nix.PathHash]bool{}
	for _, p := range valid {
		inNix[p.Hash] = true
	}
	indexed = map[nix.PathHash]bool{}
	var stale []nix.PathHash
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfxNixRec})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h nix.PathHash
			copy(h[:], it.Item().Key()[len(pfxNixRec):])
			if inNix[h] {
				indexed[h] = true
			} else {
				stale = append(stale, h)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	for _, h := range stale {
		if err := s.dropNix(h); err != nil {
			return nil, nil, dropped, err
		}
		dropped++
	}
	return valid, indexed, dropped, nil
}

// addNix adds a path to Nix's store through the daemon and records its
// chunk index when the caller knows it (its skeleton is a walk of the
// tree, made when first needed).
func (s *Store) addNix(ctx context.Context, info *nix.PathInfo, index chunk.Index, r io.Reader) (*nix.PathInfo, error) {
	if info.NarHash.IsZero() || info.NarSize == 0 {
		return nil, fmt.Errorf("adding %s to Nix's store needs its narHash and narSize", info.Path.Abs(s.storeDir))
	}
	if err := s.checkCA(info, info.NarHash); err != nil {
		return nil, err
	}
	if index != nil && index.NarSize() != info.NarSize {
		return nil, fmt.Errorf("%w: the chunk index covers %d bytes, the NAR has %d", nix.ErrHashMismatch, index.NarSize(), info.NarSize)
	}
	defer s.pathLock(info.Path.Hash)()
	if pi, err := s.Lookup(info.Path); err == nil {
		return pi, nil
	}
	if err := s.checkRefs(info); err != nil {
		return nil, err
	}
	add := *info
	add.References = nix.SortRefs(info.References)
	add.Ultimate = false
	if err := s.nix.add(ctx, &add, ctxReader{ctx, r}); err != nil {
		return nil, fmt.Errorf("adding %s: %w", info.Path.Abs(s.storeDir), err)
	}
	pi, err := s.nix.pathInfo(ctx, info.Path)
	if err != nil {
		return nil, err
	}
	if index != nil {
		if err := s.recordNix(pi, index, nil); err != nil {
			return nil, err
		}
		pi.ChunkIndex = index.ID()
	}
	return pi, nil
}

// addTreeNix is AddTree on Nix's store: one pass over the tree to hash its
// NAR, one to send it.
func (s *Store) addTreeNix(ctx context.Context, src, name string) (*nix.PathInfo, error) {
	h := sha256.New()
	size, err := nix.DumpNAR(h, src)
	if err != nil {
		return nil, fmt.Errorf("adding %s: %w", src, err)
	}
	var narHash nix.Hash
	copy(narHash[:], h.Sum(nil))
	p, err := nix.MakeSourcePath(s.storeDir, narHash, name, nil, false)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		_, err := nix.DumpNAR(bw, src)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	defer pr.CloseWithError(errors.New("stopped reading"))
	return s.addNix(ctx, &nix.PathInfo{Path: p, NarHash: narHash, NarSize: uint64(size), CA: "fixed:r:" + narHash.String()}, nil, pr)
}

// ProfilesDir is where profiles of this store live: the home's profiles
// for the embedded store; for Nix's, Nix's own profiles directory (the
// per-user one for users other than root), so that nix-env, nixos-rebuild
// and Nix's garbage collector see the same generations as trove.
func (s *Store) ProfilesDir() string {
	if s.nix == nil {
		return filepath.Join(s.home, "profiles")
	}
	dir := filepath.Join(s.nix.opts.Root, "/nix/var/nix/profiles")
	if os.Geteuid() != 0 {
		if u, err := user.Current(); err == nil {
			dir = filepath.Join(dir, "per-user", u.Username)
		}
	}
	return dir
}

// LinkTarget is what a generation link to p points at: its tree for the
// embedded store, its store path for Nix's (as Nix's own links do, also
// in a store under another root).
func (s *Store) LinkTarget(p nix.Path) string {
	if s.nix == nil {
		return s.TreePath(p)
	}
	return p.Abs(s.storeDir)
}
