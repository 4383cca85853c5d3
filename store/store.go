package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// Store is a trove store: Badger metadata in <home>/db and the physical
// trees in <home>/store/<hash32>-<name>. One process owns a Store at a time.
type Store struct {
	home     string
	storeDir string
	treeDir  string
	db       *badger.DB
	lock     *os.File
	log      *slog.Logger
	bootID   string

	mu       sync.Mutex
	inflight map[nix.PathHash]*sync.Mutex    // serialises writers of one path
	skels    map[nix.PathHash]cachedSkeleton // decoded skeletons of valid paths (bounded); guarded by mu
	// chunkLocs remembers where chunks are, filled a whole path's index at
	// a time when one of its chunks is read: serving a path then costs one
	// index lookup rather than a database scan per chunk. Bounded; cleared
	// when full or when a path is deleted. Guarded by mu.
	chunkLocs map[chunk.ID]ChunkLocation
	files     *fileCache // open tree files, for serving chunks

	nix *nixBackend // the Nix backend's daemon connections; nil for the embedded store
}

// maxCachedSkeletons bounds the skeleton cache: serving a path's chunks
// decodes its skeleton once rather than once per chunk.
const maxCachedSkeletons = 64

// Options configure Open. The zero value is usable.
type Options struct {
	// StoreDir is the logical store directory; DefaultStoreDir if empty.
	// A store keeps the directory it was created with.
	StoreDir string
	Logger   *slog.Logger
	// BootID identifies the running kernel boot; read from
	// /proc/sys/kernel/random/boot_id when empty. Tests set it to
	// simulate a reboot.
	BootID string
	// Role is recorded in <home>/lock for others who find the store in
	// use (lock.go); RoleCommand if empty.
	Role Role
	// Light opens a small database for one of many stores in one process
	// (the bench's simulated room): small memtables and caches, and no
	// background compaction, which would otherwise wake each store's
	// compactors 20 times a second. Not for a home that keeps growing.
	Light bool
	Kind
}

// Kind says which store a home works on.
type Kind struct {
	// Backend is BackendEmbedded (Badger and trees in the home) or
	// BackendNix (the machine's Nix store, see nix.go); empty means the
	// one the home was made with, embedded for a new home. A home keeps
	// the backend it was made with.
	Backend string
	// Nix says which Nix store the Nix backend works on.
	Nix NixOptions
}

// ParseKind reads --store (backend) and --nix-store (nixStore: empty for
// the machine's Nix, or "local?root=DIR" for the Nix store under DIR, as
// Nix's own --store takes it, e.g. for an installation in /mnt).
func ParseKind(backend, nixStore string) (Kind, error) {
	k := Kind{Backend: backend}
	switch backend {
	case "", BackendEmbedded, BackendNix:
	default:
		return k, fmt.Errorf("unknown store %q: use %q (trove's own) or %q (the machine's Nix store)", backend, BackendEmbedded, BackendNix)
	}
	if nixStore == "" || nixStore == "daemon" || nixStore == "auto" {
		return k, nil
	}
	if backend == BackendEmbedded {
		return k, fmt.Errorf("--nix-store %s names a Nix store, but the store is trove's embedded one: pass --store nix", nixStore)
	}
	k.Backend = BackendNix
	u, err := url.Parse(nixStore)
	root := ""
	if err == nil && (u.Scheme == "" && u.Path == "local" || u.Scheme == "local") {
		root = u.Query().Get("root")
	} else if strings.HasPrefix(nixStore, "/") && !strings.Contains(nixStore, "?") {
		root = nixStore // Nix's shorthand: a directory is local?root=DIR
	}
	if root == "" || !filepath.IsAbs(root) {
		return k, fmt.Errorf("--nix-store %q: use the machine's Nix (leave it out) or a local store under a directory, local?root=/ABS/DIR", nixStore)
	}
	k.Nix = NixOptions{StoreURI: "local?root=" + filepath.Clean(root), Root: filepath.Clean(root)}
	return k, nil
}

// Badger keys. Path hashes are the 20 raw bytes.
var (
	keyStoreDir = []byte("meta/storedir")
	pfxInfo     = []byte("p/") // p/<hash> → PathInfo record
	pfxRef      = []byte("r/") // r/<ref><referrer> → "" (who refers to ref)
	pfxSkel     = []byte("k/") // k/<hash> → NAR skeleton
	pfxIndex    = []byte("i/") // i/<hash> → chunk index (written before p/)
	pfxChunk    = []byte("c/") // c/<chunk id><hash> → uvarint NAR offset
	pfxRoot     = []byte("g/") // g/<hash> → "" (explicit GC root)
	pfxUnsynced = []byte("u/") // u/<hash> → boot ID when registered, until synced
)

func key(pfx []byte, parts ...[]byte) []byte {
	k := bytes.Clone(pfx)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// Open opens (creating if needed) the store under home.
func Open(home string, opts Options) (*Store, error) {
	if opts.StoreDir == "" {
		opts.StoreDir = nix.DefaultStoreDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if !filepath.IsAbs(opts.StoreDir) || filepath.Clean(opts.StoreDir) != opts.StoreDir || opts.StoreDir == "/" {
		return nil, fmt.Errorf("store dir %q must be a clean absolute path other than /", opts.StoreDir)
	}
	switch opts.Backend {
	case "", BackendEmbedded, BackendNix:
	default:
		return nil, fmt.Errorf("unknown store %q: use %q (trove's own) or %q (the machine's Nix store)", opts.Backend, BackendEmbedded, BackendNix)
	}
	s := &Store{
		home: home, storeDir: opts.StoreDir, treeDir: filepath.Join(home, "store"),
		log: opts.Logger, inflight: map[nix.PathHash]*sync.Mutex{}, bootID: opts.BootID,
		skels: map[nix.PathHash]cachedSkeleton{}, chunkLocs: map[chunk.ID]ChunkLocation{}, files: newFileCache(),
	}
	if s.bootID == "" {
		s.bootID = currentBootID()
	}
	for _, d := range []string{home, filepath.Join(home, "db")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating trove home: %w", err)
		}
	}
	if opts.Role == RoleUnknown {
		opts.Role = RoleCommand
	}
	lock, err := lockHome(home, opts.Role)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	bopts := badger.DefaultOptions(filepath.Join(home, "db")).
		WithLogger(nil).
		WithSyncWrites(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2)
	if opts.Light {
		bopts = bopts.WithMemTableSize(8 << 20).WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20).
			WithValueLogFileSize(4 << 20).WithNumCompactors(0)
	}
	s.db, err = badger.Open(bopts)
	if err != nil {
		unlockHome(lock)
		return nil, fmt.Errorf("opening store database in %s: %w", home, err)
	}
	if err := s.checkStoreDir(); err != nil {
		s.Close()
		return nil, err
	}
	kind, err := s.checkKind(opts.Kind)
	if err != nil {
		s.Close()
		return nil, err
	}
	opts.Kind = kind
	if kind.Backend == BackendNix {
		s.treeDir = filepath.Join(opts.Nix.Root, s.storeDir)
		if s.nix, err = openNix(context.Background(), s.storeDir, opts.Nix); err != nil {
			s.Close()
			return nil, err
		}
	} else if err := os.MkdirAll(s.treeDir, 0o755); err != nil {
		s.Close()
		return nil, fmt.Errorf("creating trove home: %w", err)
	}
	if err := s.cleanup(); err != nil {
		s.Close()
		return nil, fmt.Errorf("cleaning up after an interrupted write: %w", err)
	}
	if err := s.recoverUnsynced(context.Background()); err != nil {
		s.Close()
		return nil, fmt.Errorf("checking paths written before a restart: %w", err)
	}
	return s, nil
}

// Close releases the database and the lock.
func (s *Store) Close() error {
	if s.nix != nil {
		s.nix.close()
	}
	s.files.close()
	err := s.db.Close()
	if s.lock != nil {
		unlockHome(s.lock)
	}
	return err
}

// StoreDir is the logical store directory.
func (s *Store) StoreDir() string { return s.storeDir }

// Home is the trove home the store lives in.
func (s *Store) Home() string { return s.home }

// TreePath is where the tree of p lives on disk.
func (s *Store) TreePath(p nix.Path) string { return filepath.Join(s.treeDir, p.String()) }

func (s *Store) checkStoreDir() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyStoreDir)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(keyStoreDir, []byte(s.storeDir))
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if string(v) != s.storeDir {
				return fmt.Errorf("this store uses store dir %s, not %s: pass --store-dir %s or use another --home", v, s.storeDir, v)
			}
			return nil
		})
	})
}

// cleanup removes what an interrupted write left behind: temporary trees,
// trees that never became valid, and the chunk entries of paths whose
// registration did not finish.
func (s *Store) cleanup() error {
	// Nix's store is Nix's to clean up: trove writes no tree there.
	if s.nix == nil {
		if err := s.removeLeftoverTrees(); err != nil {
			return err
		}
	}
	var orphans []nix.PathHash
	owner := pfxInfo
	if s.nix != nil {
		owner = pfxNixRec
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfxIndex})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h nix.PathHash
			copy(h[:], it.Item().Key()[len(pfxIndex):])
			if _, err := txn.Get(key(owner, h[:])); errors.Is(err, badger.ErrKeyNotFound) {
				orphans = append(orphans, h)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, h := range orphans {
		if err := s.dropMetadata(h); err != nil {
			return err
		}
	}
	return nil
}

// removeLeftoverTrees removes the trees in the embedded store that are
// not valid: temporary trees and trees whose registration never happened.
func (s *Store) removeLeftoverTrees() error {
	ents, err := os.ReadDir(s.treeDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if p, err := nix.ParseBase(name); err == nil {
			if ok, err := s.IsValid(p); err != nil || ok {
				continue
			}
		}
		s.log.Info("removing leftover of an interrupted write", "tree", name)
		if err := nix.RemoveTree(filepath.Join(s.treeDir, name)); err != nil {
			return err
		}
	}
	return nil
}

// pathLock serialises writers of one path within this process.
func (s *Store) pathLock(h nix.PathHash) func() {
	s.mu.Lock()
	m, ok := s.inflight[h]
	if !ok {
		m = &sync.Mutex{}
		s.inflight[h] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// IsValid reports whether p is a valid path.
func (s *Store) IsValid(p nix.Path) (bool, error) {
	if s.nix != nil {
		return s.nix.isValid(context.Background(), p)
	}
	pi, err := s.PathInfo(p.Hash)
	if errors.Is(err, nix.ErrNotValid) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return pi.Path == p, nil
}

// PathInfo returns the info of the valid path with digest h.
func (s *Store) PathInfo(h nix.PathHash) (*nix.PathInfo, error) {
	if s.nix != nil {
		p, err := s.nix.pathOf(context.Background(), h)
		if err != nil {
			return nil, err
		}
		return s.Lookup(p)
	}
	var pi *nix.PathInfo
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		pi, err = getInfo(txn, h)
		return err
	})
	return pi, err
}

func getInfo(txn *badger.Txn, h nix.PathHash) (*nix.PathInfo, error) {
	item, err := txn.Get(key(pfxInfo, h[:]))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", h, nix.ErrNotValid)
	}
	if err != nil {
		return nil, err
	}
	var pi *nix.PathInfo
	err = item.Value(func(v []byte) error {
		pi, err = decodePathInfo(v)
		return err
	})
	return pi, err
}

// Lookup returns the info of p, checking the name as well as the digest.
func (s *Store) Lookup(p nix.Path) (*nix.PathInfo, error) {
	if s.nix != nil {
		pi, err := s.nix.pathInfo(context.Background(), p)
		if err != nil {
			return nil, err
		}
		return s.withIndexID(pi), nil
	}
	pi, err := s.PathInfo(p.Hash)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Abs(s.storeDir), nix.ErrNotValid)
	}
	if pi.Path != p {
		return nil, fmt.Errorf("%s: %w (the store has %s)", p.Abs(s.storeDir), nix.ErrNotValid, pi.Path)
	}
	return pi, nil
}

// Paths calls fn with every valid path's info, in digest order.
func (s *Store) Paths(ctx context.Context, fn func(*nix.PathInfo) error) error {
	if s.nix != nil {
		ps, err := s.nix.allValid(ctx)
		if err != nil {
			return err
		}
		slices.SortFunc(ps, func(a, b nix.Path) int { return bytes.Compare(a.Hash[:], b.Hash[:]) })
		for _, p := range ps {
			pi, err := s.Lookup(p)
			if errors.Is(err, nix.ErrNotValid) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if err := fn(pi); err != nil {
				return err
			}
		}
		return nil
	}
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfxInfo, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var pi *nix.PathInfo
			err := it.Item().Value(func(v []byte) error {
				var err error
				pi, err = decodePathInfo(v)
				return err
			})
			if err != nil {
				return err
			}
			if err := fn(pi); err != nil {
				return err
			}
		}
		return nil
	})
}

// Referrers returns the valid paths that refer to h.
func (s *Store) Referrers(h nix.PathHash) ([]nix.PathHash, error) {
	var out []nix.PathHash
	err := s.db.View(func(txn *badger.Txn) error {
		pfx := key(pfxRef, h[:])
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r nix.PathHash
			copy(r[:], it.Item().Key()[len(pfx):])
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Closure returns the infos of the closure of roots (the roots and
// everything they reference, transitively), each once, references before
// their referrers, so the result is an order in which the paths can be
// registered.
func (s *Store) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	var out []*nix.PathInfo
	seen := map[nix.PathHash]bool{}
	err := s.db.View(func(txn *badger.Txn) error {
		var visit func(p nix.Path, depth int) error
		visit = func(p nix.Path, depth int) error {
			if seen[p.Hash] {
				return nil
			}
			seen[p.Hash] = true
			var pi *nix.PathInfo
			var err error
			if s.nix != nil {
				// A Nix path not indexed yet has no ChunkIndex: ask
				// ChunkIndexOf for it where it is needed.
				pi, err = s.Lookup(p)
			} else {
				pi, err = getInfo(txn, p.Hash)
			}
			if err != nil || pi.Path != p {
				return fmt.Errorf("%s: %w", p.Abs(s.storeDir), nix.ErrNotValid)
			}
			for _, r := range pi.References {
				if err := visit(r, depth+1); err != nil {
					return err
				}
			}
			out = append(out, pi)
			return nil
		}
		for _, r := range roots {
			if err := visit(r, 0); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ChunkIndexOf returns the chunk index of a valid path.
func (s *Store) ChunkIndexOf(h nix.PathHash) (chunk.Index, error) {
	if s.nix != nil {
		pi, err := s.PathInfo(h)
		if err != nil {
			return nil, err
		}
		return s.nixIndex(context.Background(), pi)
	}
	return s.storedIndex(h)
}

// storedIndex returns the chunk index recorded for h.
func (s *Store) storedIndex(h nix.PathHash) (chunk.Index, error) {
	var ix chunk.Index
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key(pfxIndex, h[:]))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%s: %w", h, nix.ErrNotValid)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			ix, err = chunk.DecodeIndex(v)
			return err
		})
	})
	return ix, err
}

// cachedSkeleton is a decoded skeleton and the tree it describes.
type cachedSkeleton struct {
	sk   *skeleton
	tree string
}

// skeleton returns the decoded skeleton of valid path h and its tree.
func (s *Store) skeleton(h nix.PathHash) (*skeleton, string, error) {
	s.mu.Lock()
	c, ok := s.skels[h]
	s.mu.Unlock()
	if ok {
		return c.sk, c.tree, nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		var p nix.Path
		if s.nix != nil {
			var err error
			if p, err = nixTree(txn, h); err != nil {
				return err
			}
		} else {
			pi, err := getInfo(txn, h)
			if err != nil {
				return err
			}
			p = pi.Path
		}
		c.tree = s.TreePath(p)
		item, err := txn.Get(key(pfxSkel, h[:]))
		if errors.Is(err, badger.ErrKeyNotFound) && s.nix != nil {
			return nil // made from the tree below
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%s: %w", h, nix.ErrNotValid)
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		c.sk, err = decodeSkeleton(v)
		return err
	})
	if err == nil && c.sk == nil {
		// A path Nix added for us: its skeleton is a walk of its tree.
		c.sk, err = s.walkSkeleton(h, c.tree)
	}
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	if len(s.skels) >= maxCachedSkeletons {
		for k := range s.skels { // evict one at random
			delete(s.skels, k)
			break
		}
	}
	s.skels[h] = c
	s.mu.Unlock()
	return c.sk, c.tree, nil
}

// forgetSkeleton drops what the caches know of a path being deleted.
func (s *Store) forgetSkeleton(h nix.PathHash) {
	s.mu.Lock()
	c, ok := s.skels[h]
	delete(s.skels, h)
	clear(s.chunkLocs)
	s.mu.Unlock()
	if ok {
		s.files.forget(c.tree)
	}
}

// WriteNAR writes bytes [off, off+n) of the NAR of valid path p to w,
// produced from the tree; n < 0 means to the end.
func (s *Store) WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error {
	pi, err := s.Lookup(p)
	if err != nil {
		return err
	}
	if s.nix != nil {
		if err := s.nix.tempRoot(ctx, p); err != nil {
			return err
		}
		if pi.ChunkIndex == (chunk.ID{}) && off == 0 && n < 0 {
			// Not indexed: the whole NAR needs no skeleton.
			bw := bufio.NewWriterSize(ctxWriter{ctx, w}, 256<<10)
			if _, err := nix.DumpNAR(bw, s.TreePath(p)); err != nil {
				return err
			}
			return bw.Flush()
		}
		if _, err := s.nixIndex(ctx, pi); err != nil {
			return err
		}
	}
	sk, tree, err := s.skeleton(p.Hash)
	if err != nil {
		return err
	}
	if n < 0 {
		n = sk.size - off
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return sk.writeRange(ctxWriter{ctx, w}, tree, off, n, *buf)
}

// copyBufs recycles the buffers of long copies from trees.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// ctxWriter stops a long copy when its context ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ChunkLocation is where a chunk's bytes can be read locally.
type ChunkLocation struct {
	Path   nix.PathHash
	Offset int64
}

// FindChunk returns where in the store the chunk id can be read, if anywhere.
func (s *Store) FindChunk(id chunk.ID) ([]ChunkLocation, error) {
	var out []ChunkLocation
	err := s.db.View(func(txn *badger.Txn) error {
		pfx := key(pfxChunk, id[:])
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var loc ChunkLocation
			copy(loc.Path[:], it.Item().Key()[len(pfx):])
			err := it.Item().Value(func(v []byte) error {
				off, k := binary.Uvarint(v)
				if k <= 0 {
					return errors.New("corrupt chunk location")
				}
				loc.Offset = int64(off)
				return nil
			})
			if err != nil {
				return err
			}
			out = append(out, loc)
		}
		return nil
	})
	return out, err
}

// ReadChunk returns the bytes of chunk id from any valid path that holds it,
// verified against id: what local reuse needs, since a damaged tree must
// not end up inside another path. It returns nix.ErrNotValid if no path has it.
func (s *Store) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	return s.readChunk(ctx, id, size, true, nil)
}

// ChunkData is ReadChunk without the hash check, for serving peers: every
// receiver verifies each chunk against its ID on arrival (and blames us if
// our tree is damaged), so hashing here too would only halve the rate.
// The chunk is read into dst when it has room (a server recycles its
// buffers), else into a new slice.
func (s *Store) ChunkData(ctx context.Context, id chunk.ID, size uint32, dst []byte) ([]byte, error) {
	return s.readChunk(ctx, id, size, false, dst)
}

func (s *Store) readChunk(ctx context.Context, id chunk.ID, size uint32, verify bool, dst []byte) ([]byte, error) {
	if size == 0 || size > chunk.MaxSize {
		return nil, fmt.Errorf("chunk %s: size %d out of range", id, size)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The buffer is made only once a location is known: sync asks for every
	// chunk of a cold closure, and almost all of them are not here.
	var buf []byte
	s.mu.Lock()
	cached, ok := s.chunkLocs[id]
	s.mu.Unlock()
	newBuf := func() []byte {
		if uint32(cap(dst)) >= size {
			return dst[:size]
		}
		return make([]byte, size)
	}
	if ok {
		buf = newBuf()
		if sk, tree, err := s.skeleton(cached.Path); err == nil && (s.nix == nil || s.nixServable(ctx, cached.Path, tree)) &&
			sk.readAt(buf, tree, cached.Offset, s.files) == nil &&
			(!verify || chunk.Sum(buf) == id) {
			return buf, nil
		}
	}
	locs, err := s.FindChunk(id)
	if err != nil {
		return nil, err
	}
	for _, loc := range locs {
		sk, tree, err := s.skeleton(loc.Path)
		if err != nil {
			continue // registration unfinished or path collected
		}
		if buf == nil {
			buf = newBuf()
		}
		if s.nix != nil && !s.nixServable(ctx, loc.Path, tree) {
			continue
		}
		if err := sk.readAt(buf, tree, loc.Offset, s.files); err != nil {
			s.log.Warn("cannot read chunk from its tree", "chunk", id, "tree", tree, "err", err)
			continue
		}
		if verify && chunk.Sum(buf) != id {
			s.log.Warn("chunk bytes in tree do not match; the tree is damaged", "chunk", id, "tree", tree)
			continue
		}
		s.rememberChunks(loc.Path)
		return buf, nil
	}
	return nil, fmt.Errorf("chunk %s: %w", id, nix.ErrNotValid)
}

// maxChunkLocs bounds the chunk location cache (about 100 bytes an entry).
const maxChunkLocs = 1 << 17

// rememberChunks caches the locations of every chunk of path h.
func (s *Store) rememberChunks(h nix.PathHash) {
	ix, err := s.ChunkIndexOf(h)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.chunkLocs)+len(ix) > maxChunkLocs {
		clear(s.chunkLocs)
	}
	if len(ix) > maxChunkLocs {
		return
	}
	var off uint64
	for _, c := range ix {
		s.chunkLocs[c.ID] = ChunkLocation{Path: h, Offset: int64(off)}
		off += uint64(c.Size)
	}
}
