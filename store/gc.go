package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/trove-p2p/trove/nix"
)

// RootSource yields further GC roots (profiles, generations) from outside
// the store; the store itself only knows explicit roots.
type RootSource func() ([]nix.Path, error)

// AddRoot makes p an explicit GC root. p must be valid.
func (s *Store) AddRoot(p nix.Path) error {
	if _, err := s.Lookup(p); err != nil {
		return err
	}
	if s.nix != nil {
		return s.nixGCRoot(context.Background(), p, true)
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key(pfxRoot, p.Hash[:]), []byte(p.Name)) })
}

// Hold keeps what a sync works with from Nix's garbage collector until
// release is called: every path the store adds or finds valid meanwhile
// stays a temporary root, however long that takes, so a sync longer than
// the temporary roots last does not lose the paths it delivered first (or
// found valid) before the profile that needs them roots them. Call release
// once the paths are rooted or no longer needed; afterwards they stay
// rooted for a while longer, as after Nix's own substitution. The embedded
// store's collector runs in the agent that owns the home and needs no
// hold.
func (s *Store) Hold() (release func()) {
	if s.nix == nil {
		return func() {}
	}
	return s.nix.hold()
}

// RemoveRoot removes an explicit GC root; removing a non-root is an error.
func (s *Store) RemoveRoot(p nix.Path) error {
	if s.nix != nil {
		if _, err := os.Lstat(filepath.Join(s.home, "gcroots", p.String())); err != nil {
			return fmt.Errorf("%s is not a GC root", p.Abs(s.storeDir))
		}
		return s.nixGCRoot(context.Background(), p, false)
	}
	return s.db.Update(func(txn *badger.Txn) error {
		k := key(pfxRoot, p.Hash[:])
		if _, err := txn.Get(k); errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%s is not a GC root", p.Abs(s.storeDir))
		}
		return txn.Delete(k)
	})
}

// Roots lists the explicit GC roots, sorted.
func (s *Store) Roots() ([]nix.Path, error) {
	if s.nix != nil {
		return s.nixRoots()
	}
	var out []nix.Path
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfxRoot, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var p nix.Path
			copy(p.Hash[:], it.Item().Key()[len(pfxRoot):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			p.Name = string(v)
			out = append(out, p)
		}
		return nil
	})
	slices.SortFunc(out, nix.Path.Compare)
	return out, err
}

// GCResult says what a collection removed (or would remove).
type GCResult struct {
	Removed    []nix.Path
	BytesFreed uint64 // NAR bytes of the removed paths
}

// GC removes every valid path not in the closure of a root. With dryRun it
// only reports. Referrers are removed before what they refer to, each path
// first made invalid and then deleted from disk, so a crash midway leaves a
// consistent store (and an unregistered tree that the next Open removes).
//
// On Nix's store, Nix's garbage collector decides (`nix-collect-garbage`;
// trove's profiles and roots are Nix's GC roots): GC only forgets the
// records of paths Nix has deleted.
func (s *Store) GC(ctx context.Context, dryRun bool, extra ...RootSource) (*GCResult, error) {
	if s.nix != nil {
		if !dryRun {
			if _, _, _, err := s.forgetDeleted(ctx); err != nil {
				return nil, err
			}
		}
		return &GCResult{}, nil
	}
	roots, err := s.Roots()
	if err != nil {
		return nil, err
	}
	for _, src := range extra {
		more, err := src()
		if err != nil {
			return nil, err
		}
		roots = append(roots, more...)
	}
	var live []nix.Path
	for _, r := range roots {
		if ok, _ := s.IsValid(r); ok {
			live = append(live, r)
		}
	}
	keep, err := s.Closure(live...)
	if err != nil {
		return nil, err
	}
	kept := map[nix.PathHash]bool{}
	for _, pi := range keep {
		kept[pi.Path.Hash] = true
	}
	var dead []*nix.PathInfo
	err = s.Paths(ctx, func(pi *nix.PathInfo) error {
		if !kept[pi.Path.Hash] {
			dead = append(dead, pi)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Order referrers first: reverse of a references-first order.
	order, err := topoOrder(dead)
	if err != nil {
		return nil, err
	}
	res := &GCResult{}
	for _, pi := range slices.Backward(order) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if !dryRun {
			if err := s.deletePath(pi); err != nil {
				return res, err
			}
		}
		res.Removed = append(res.Removed, pi.Path)
		res.BytesFreed += pi.NarSize
	}
	slices.SortFunc(res.Removed, nix.Path.Compare)
	return res, nil
}

// topoOrder orders infos references-first (among themselves).
func topoOrder(infos []*nix.PathInfo) ([]*nix.PathInfo, error) {
	byHash := make(map[nix.PathHash]*nix.PathInfo, len(infos))
	for _, pi := range infos {
		byHash[pi.Path.Hash] = pi
	}
	done := map[nix.PathHash]bool{}
	out := make([]*nix.PathInfo, 0, len(infos))
	// Iterative DFS: closures can be deep.
	type frame struct {
		pi *nix.PathInfo
		i  int
	}
	for _, start := range infos {
		if done[start.Path.Hash] {
			continue
		}
		stack := []frame{{start, 0}}
		done[start.Path.Hash] = true
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.i < len(top.pi.References) {
				ref := top.pi.References[top.i]
				top.i++
				if next, ok := byHash[ref.Hash]; ok && !done[ref.Hash] {
					done[ref.Hash] = true
					stack = append(stack, frame{next, 0})
				}
				continue
			}
			out = append(out, top.pi)
			stack = stack[:len(stack)-1]
		}
	}
	return out, nil
}

// deletePath makes a path invalid, then removes its tree and records.
func (s *Store) deletePath(pi *nix.PathInfo) error {
	h := pi.Path.Hash
	defer s.pathLock(h)()
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(key(pfxInfo, h[:])); err != nil {
			return err
		}
		for _, ref := range pi.References {
			if err := txn.Delete(key(pfxRef, ref.Hash[:], h[:])); err != nil {
				return err
			}
		}
		return txn.Delete(key(pfxRoot, h[:]))
	})
	if err != nil {
		return err
	}
	s.forgetSkeleton(h)
	if err := nix.RemoveTree(s.TreePath(pi.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return s.dropMetadata(h)
}

// StoreSize sums the NAR sizes and counts the valid paths.
func (s *Store) StoreSize(ctx context.Context) (paths int, bytes uint64, err error) {
	err = s.Paths(ctx, func(pi *nix.PathInfo) error {
		paths++
		bytes += pi.NarSize
		return nil
	})
	return
}
