package store

import (
	"context"
	"os"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/trove-p2p/trove/nix"
	"golang.org/x/sys/unix"
)

// Durability. Writing a tree and fsyncing it before registering costs the
// disk's write speed (≈0.4 GB/s here), while Nix itself never syncs store
// contents. trove registers a path as soon as its tree is renamed into
// place, with an "unsynced" mark holding the kernel's boot ID, and makes
// trees durable in bulk with one syncfs(2) (Sync), after which the marks go.
//
//   - A process crash (kill -9) loses nothing: written data sits in the page
//     cache, which the kernel writes back; a mark from this boot is harmless.
//   - A machine crash or power loss can lose unsynced data. After a reboot
//     the boot ID differs, so Open re-verifies every path still marked, and
//     removes those that fail together with their referrers, restoring the
//     invariant that a valid path's tree hashes to its narHash.
//
// So a path is either durable, or will be checked before it is trusted again.

func currentBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown" // every Open then re-verifies marked paths: safe
	}
	return strings.TrimSpace(string(b))
}

// Sync makes every path registered so far durable and clears their marks.
func (s *Store) Sync() error {
	marked, err := s.unsynced()
	if err != nil || len(marked) == 0 {
		return err
	}
	f, err := os.Open(s.treeDir)
	if err != nil {
		return err
	}
	err = unix.Syncfs(int(f.Fd()))
	f.Close()
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for h := range marked {
		if err := wb.Delete(key(pfxUnsynced, h[:])); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// unsynced returns the marked paths and the boot each was written in.
func (s *Store) unsynced() (map[nix.PathHash]string, error) {
	out := map[nix.PathHash]string{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfxUnsynced, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h nix.PathHash
			copy(h[:], it.Item().Key()[len(pfxUnsynced):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[h] = string(v)
		}
		return nil
	})
	return out, err
}

// recoverUnsynced runs at Open: marks from an earlier boot mean the machine
// went down before their trees were known durable, so those paths are
// verified; marks from this boot are settled by syncing.
func (s *Store) recoverUnsynced(ctx context.Context) error {
	marked, err := s.unsynced()
	if err != nil || len(marked) == 0 {
		return err
	}
	stale := false
	for h, boot := range marked {
		if boot == s.bootID && boot != "unknown" {
			continue
		}
		stale = true
		pi, err := s.PathInfo(h)
		if err != nil {
			continue // already gone
		}
		bad := false
		s.verifyOne(pi, func(Problem) { bad = true })
		if bad {
			s.log.Warn("removing a path damaged by a crash before it was synced", "path", pi.Path)
			if err := s.removeWithReferrers(ctx, pi.Path.Hash); err != nil {
				return err
			}
		}
	}
	if stale {
		s.log.Info("verified paths written before a restart", "count", len(marked))
	}
	return s.Sync()
}

// removeWithReferrers invalidates h and everything that refers to it,
// referrers first, keeping the closure invariant.
func (s *Store) removeWithReferrers(ctx context.Context, h nix.PathHash) error {
	refs, err := s.Referrers(h)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r == h {
			continue
		}
		if err := s.removeWithReferrers(ctx, r); err != nil {
			return err
		}
	}
	pi, err := s.PathInfo(h)
	if err != nil {
		return nil // removed through another referrer chain
	}
	return s.deletePath(pi)
}
