package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// staged is a NAR unpacked into a temporary tree inside the store, with
// everything needed to register it.
type staged struct {
	tmp     string
	narHash nix.Hash
	narSize uint64
	index   chunk.Index
	skel    *skeleton
}

// stage unpacks the NAR on r into a fresh temporary tree, computing its
// sha256, skeleton and chunk index in the same pass: parsing, hashing and
// writing on this goroutine, chunking and BLAKE3 on another. Nothing is
// synced yet. The caller owns the returned tree.
func (s *Store) stage(ctx context.Context, r io.Reader, known chunk.Index) (*staged, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	st := &staged{tmp: filepath.Join(s.treeDir, ".tmp-"+hex.EncodeToString(rnd[:]))}

	// Three stages, each on its own goroutine and fed through a buffer so
	// none waits for another on every write: this one parses and writes the
	// tree; one computes SHA-256; one cuts and BLAKE3-hashes chunks (unless
	// the caller already verified the chunks against a known index). On two
	// cores the three cost about two cores' worth of time in all.
	hp := newPooledPipe()
	hashed := make(chan error, 1)
	h := sha256.New()
	go func() {
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(onlyWriter{h}, onlyReader{hp}, *buf)
		copyBufs.Put(buf)
		hp.CloseRead(err)
		hashed <- err
	}()
	sinks, pipes := io.Writer(hp), []*bufPipe{hp}
	chunked := make(chan error, 1)
	if known != nil {
		st.index = known
		chunked <- nil
	} else {
		cp := newPooledPipe()
		sinks, pipes = io.MultiWriter(hp, cp), append(pipes, cp)
		go func() {
			var err error
			st.index, err = chunk.IndexNAR(cp)
			cp.CloseRead(err) // unblock the writer if chunking failed
			chunked <- err
		}()
	}

	tee := io.TeeReader(ctxReader{ctx, r}, sinks)
	tw := nix.NewTreeWriter(st.tmp, true)
	size, segs, err := nix.ReadNARSkeleton(tee, tw)
	for _, p := range pipes {
		p.CloseWrite(err)
	}
	herr, cerr := <-hashed, <-chunked
	for _, p := range pipes {
		p.recycle() // both ends are done with it
	}
	if err == nil {
		err = herr
	}
	if err == nil {
		err = cerr
	}
	if err != nil {
		_ = nix.RemoveTree(st.tmp)
		return nil, err
	}
	st.narSize = uint64(size)
	if known != nil && known.NarSize() != st.narSize {
		nix.RemoveTree(st.tmp)
		return nil, fmt.Errorf("%w: the chunk index covers %d bytes, the NAR has %d", nix.ErrHashMismatch, known.NarSize(), st.narSize)
	}
	copy(st.narHash[:], h.Sum(nil))
	st.skel = newSkeleton(segs)
	return st, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// commit makes a staged tree the valid path described by info: it syncs the
// tree to disk, renames it into place and registers it. References other
// than the path itself must already be valid.
func (s *Store) commit(st *staged, info *nix.PathInfo) (*nix.PathInfo, error) {
	defer nix.RemoveTree(st.tmp) // no-op once renamed
	if err := nix.CheckName(info.Path.Name); err != nil {
		return nil, err
	}
	// Another writer may have made it valid meanwhile.
	if pi, err := s.Lookup(info.Path); err == nil {
		return pi, nil
	}
	if err := s.checkRefs(info); err != nil {
		return nil, err
	}
	final := s.TreePath(info.Path)
	if err := nix.RemoveTree(final); err != nil { // an unregistered leftover
		return nil, err
	}
	// The tree is not synced here: the path is registered as unsynced and a
	// later Sync makes trees durable in bulk (see durability.go).
	if err := os.Rename(st.tmp, final); err != nil {
		return nil, err
	}

	pi := *info
	pi.References = nix.SortRefs(info.References)
	pi.NarHash, pi.NarSize, pi.ChunkIndex = st.narHash, st.narSize, st.index.ID()
	if pi.RegistrationTime.IsZero() {
		pi.RegistrationTime = time.Now()
	}
	h := pi.Path.Hash

	// The chunk index and chunk locations go first, in batches (a big NAR
	// has more chunks than one transaction holds); the path becomes valid
	// only with the final transaction. Open removes the entries of a path
	// whose final transaction never happened.
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := wb.Set(key(pfxIndex, h[:]), st.index.Encode()); err != nil {
		return nil, err
	}
	for i, off := range st.index.Offsets() {
		id := st.index[i].ID
		if err := wb.Set(key(pfxChunk, id[:], h[:]), binary.AppendUvarint(nil, off)); err != nil {
			return nil, err
		}
	}
	if err := wb.Flush(); err != nil {
		return nil, err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(key(pfxSkel, h[:]), st.skel.encode()); err != nil {
			return err
		}
		for _, ref := range pi.References {
			if err := txn.Set(key(pfxRef, ref.Hash[:], h[:]), nil); err != nil {
				return err
			}
		}
		if err := txn.Set(key(pfxUnsynced, h[:]), []byte(s.bootID)); err != nil {
			return err
		}
		return txn.Set(key(pfxInfo, h[:]), encodePathInfo(&pi))
	})
	if err != nil {
		return nil, fmt.Errorf("registering %s: %w", pi.Path.Abs(s.storeDir), err)
	}
	return &pi, nil
}

// checkRefs says why info cannot become valid yet: a reference other than
// itself that is not valid (the closure invariant).
func (s *Store) checkRefs(info *nix.PathInfo) error {
	for _, ref := range info.References {
		if ref == info.Path {
			continue
		}
		if ok, err := s.IsValid(ref); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("cannot add %s: its reference %s is not valid in the store; add the references first", info.Path.Abs(s.storeDir), ref.Abs(s.storeDir))
		}
	}
	return nil
}

// AddNAR reads the NAR of info.Path from r and makes the path valid.
// info.NarHash and info.NarSize, when set, must match what arrives; on any
// mismatch or error nothing becomes valid. Its references must be valid.
func (s *Store) AddNAR(ctx context.Context, info *nix.PathInfo, r io.Reader) (*nix.PathInfo, error) {
	return s.AddNARIndexed(ctx, info, nil, r)
}

// AddNARIndexed is AddNAR for a NAR whose chunk index the caller knows and
// has verified chunk by chunk while assembling r (as sync does), so the
// store need not cut and hash the chunks again. nil means unknown.
func (s *Store) AddNARIndexed(ctx context.Context, info *nix.PathInfo, index chunk.Index, r io.Reader) (*nix.PathInfo, error) {
	if pi, err := s.Lookup(info.Path); err == nil {
		// Already valid: drain nothing, the caller may skip sending.
		return pi, nil
	}
	if s.nix != nil {
		return s.addNix(ctx, info, index, r)
	}
	x, err := s.StageNAR(ctx, info, index, r)
	if err != nil {
		return nil, err
	}
	return x.Commit()
}

// A Staged NAR is unpacked into a temporary tree and checked against its
// PathInfo, but not valid yet: Commit makes it valid once its references
// are, Discard throws it away. A crash meanwhile leaves only a temporary
// tree, which Open removes.
type Staged struct {
	s    *Store
	info nix.PathInfo
	st   *staged
	done *nix.PathInfo // the Nix backend: added already
}

// StageNAR reads the NAR of info.Path from r into a temporary tree and
// checks it: info.NarHash and info.NarSize, when set, must match what
// arrived, and so must a content address. index is as for AddNARIndexed.
// Unlike AddNARIndexed it does not need the references to be valid, so a
// NAR can be unpacked as soon as it arrives and committed later.
//
// The Nix backend cannot stage: Nix restores and registers a NAR in one
// step, so its references must be valid already (see StagesAhead) and
// StageNAR adds the path at once.
func (s *Store) StageNAR(ctx context.Context, info *nix.PathInfo, index chunk.Index, r io.Reader) (*Staged, error) {
	if s.nix != nil {
		pi, err := s.AddNARIndexed(ctx, info, index, r)
		if err != nil {
			return nil, err
		}
		return &Staged{s: s, info: *info, done: pi}, nil
	}
	st, err := s.stage(ctx, r, index)
	if err != nil {
		return nil, fmt.Errorf("adding %s: %w", info.Path.Abs(s.storeDir), err)
	}
	if (!info.NarHash.IsZero() && st.narHash != info.NarHash) || (info.NarSize != 0 && st.narSize != info.NarSize) {
		nix.RemoveTree(st.tmp)
		return nil, fmt.Errorf("%w for %s: expected %s (%d bytes), got %s (%d bytes)",
			nix.ErrHashMismatch, info.Path.Abs(s.storeDir), info.NarHash, info.NarSize, st.narHash, st.narSize)
	}
	if err := s.checkCA(info, st.narHash); err != nil {
		nix.RemoveTree(st.tmp)
		return nil, err
	}
	return &Staged{s: s, info: *info, st: st}, nil
}

// Commit makes the staged NAR the valid path: its references other than
// itself must be valid by now.
func (x *Staged) Commit() (*nix.PathInfo, error) {
	if x.done != nil {
		return x.done, nil
	}
	defer x.s.pathLock(x.info.Path.Hash)()
	return x.s.commit(x.st, &x.info)
}

// Discard removes the staged tree.
func (x *Staged) Discard() {
	if x.st != nil {
		nix.RemoveTree(x.st.tmp)
	}
}

// StagesAhead reports whether StageNAR takes a NAR whose references are
// not valid yet: the embedded store does, the Nix backend does not.
func (s *Store) StagesAhead() bool { return s.nix == nil }

// checkCA verifies a "fixed:r:sha256:" content address against the NAR
// hash: such a path's name hash must recompute from its content.
func (s *Store) checkCA(info *nix.PathInfo, narHash nix.Hash) error {
	h, want, ok, err := info.CAPath(s.storeDir)
	switch {
	case !ok:
		return nil // other forms cannot be checked from the NAR alone
	case err != nil:
		return fmt.Errorf("%s: %w", info.Path.Abs(s.storeDir), err)
	case h != narHash:
		return fmt.Errorf("%w for %s: its CA claims %s, NAR hashes to %s", nix.ErrHashMismatch, info.Path.Abs(s.storeDir), h, narHash)
	case want != info.Path:
		return fmt.Errorf("%s: its content address gives %s", info.Path.Abs(s.storeDir), want.Abs(s.storeDir))
	}
	return nil
}

// AddTree adds the file, directory or symlink at src as a content-addressed
// path named name (no references), exactly as `nix-store --add` does.
func (s *Store) AddTree(ctx context.Context, src, name string) (*nix.PathInfo, error) {
	if err := nix.CheckName(name); err != nil {
		return nil, fmt.Errorf("cannot add %s: %w; rename it or pass a valid name", src, err)
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, fmt.Errorf("cannot add %s: %w", src, err)
	}
	if s.nix != nil {
		return s.addTreeNix(ctx, src, name)
	}
	pipe := newBufPipe(8 << 20)
	go func() {
		_, err := nix.DumpNAR(pipe, src)
		pipe.CloseWrite(err)
	}()
	st, err := s.stage(ctx, pipe, nil)
	pipe.CloseRead(errors.New("stopped reading"))
	if err != nil {
		return nil, fmt.Errorf("adding %s: %w", src, err)
	}
	p, err := nix.MakeSourcePath(s.storeDir, st.narHash, name, nil, false)
	if err != nil {
		nix.RemoveTree(st.tmp)
		return nil, err
	}
	defer s.pathLock(p.Hash)()
	// Like `nix-store --add`: content-addressed, so not "ultimate".
	return s.commit(st, &nix.PathInfo{Path: p, CA: "fixed:r:" + st.narHash.String()})
}

// dropMetadata deletes every record of path h except its reverse references
// from others (which GC removes with the referrer).
func (s *Store) dropMetadata(h nix.PathHash) error {
	ix, err := s.storedIndex(h)
	if err != nil && !errors.Is(err, nix.ErrNotValid) {
		// A corrupt index still must not block removal.
		s.log.Warn("dropping unreadable chunk index", "path", h, "err", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, c := range ix {
		if err := wb.Delete(key(pfxChunk, c.ID[:], h[:])); err != nil {
			return err
		}
	}
	for _, k := range [][]byte{key(pfxSkel, h[:]), key(pfxIndex, h[:])} {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}
