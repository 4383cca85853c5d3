package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/trove-p2p/trove/nix"
)

// Problem is one thing wrong with a stored path.
type Problem struct {
	Path   nix.Path
	Kind   string // "missing", "corrupt", "reference"
	Detail string
}

func (p Problem) Error() string { return fmt.Sprintf("%s: %s: %s", p.Path, p.Kind, p.Detail) }

// Verify recomputes the NAR hash and size of each path from its tree and
// checks that its references are valid. With no paths it checks them all.
// It calls report for each problem and returns how many paths it checked.
func (s *Store) Verify(ctx context.Context, paths []nix.Path, report func(Problem)) (int, error) {
	var infos []*nix.PathInfo
	if len(paths) == 0 {
		if err := s.Paths(ctx, func(pi *nix.PathInfo) error { infos = append(infos, pi); return nil }); err != nil {
			return 0, err
		}
	}
	for _, p := range paths {
		pi, err := s.Lookup(p)
		if err != nil {
			report(Problem{Path: p, Kind: "missing", Detail: "not a valid path in this store"})
			continue
		}
		infos = append(infos, pi)
	}
	for _, pi := range infos {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		s.verifyOne(pi, report)
	}
	return len(infos), nil
}

func (s *Store) verifyOne(pi *nix.PathInfo, report func(Problem)) {
	for _, ref := range pi.References {
		if ok, err := s.IsValid(ref); err != nil || !ok {
			report(Problem{Path: pi.Path, Kind: "reference", Detail: "refers to " + ref.Abs(s.storeDir) + ", which is not valid"})
		}
	}
	tree := s.TreePath(pi.Path)
	if _, err := os.Lstat(tree); errors.Is(err, os.ErrNotExist) {
		report(Problem{Path: pi.Path, Kind: "missing", Detail: "its tree " + tree + " is gone"})
		return
	}
	// One pass over the data: the tree's current shape must equal the
	// recorded skeleton (catching added, removed or retyped entries and
	// changed modes or symlinks), then the NAR produced through the
	// skeleton must hash to narHash (catching changed contents).
	sk, _, err := s.skeleton(pi.Path.Hash)
	if err != nil {
		report(Problem{Path: pi.Path, Kind: "corrupt", Detail: "its NAR skeleton is unreadable: " + err.Error()})
		return
	}
	var segs []nix.Segment
	if err := nix.WalkNAR(tree, func(g nix.Segment) error { segs = append(segs, g); return nil }); err != nil {
		report(Problem{Path: pi.Path, Kind: "corrupt", Detail: "cannot read its tree: " + err.Error()})
		return
	}
	if !sameSegments(segs, sk.segs) {
		report(Problem{Path: pi.Path, Kind: "corrupt", Detail: "its tree's files, modes or symlinks changed"})
		return
	}
	h := sha256.New()
	if err := sk.writeRange(h, tree, 0, sk.size, make([]byte, 256<<10)); err != nil {
		report(Problem{Path: pi.Path, Kind: "corrupt", Detail: "cannot read its tree: " + err.Error()})
		return
	}
	var got nix.Hash
	copy(got[:], h.Sum(nil))
	if got != pi.NarHash || uint64(sk.size) != pi.NarSize {
		report(Problem{Path: pi.Path, Kind: "corrupt", Detail: fmt.Sprintf("NAR hash %s (%d bytes), expected %s (%d bytes)", got, sk.size, pi.NarHash, pi.NarSize)})
	}
}

func sameSegments(a, b []nix.Segment) bool {
	return slices.EqualFunc(a, b, func(x, y nix.Segment) bool {
		return bytes.Equal(x.Lit, y.Lit) && (x.Lit == nil) == (y.Lit == nil) && x.File == y.File && x.Size == y.Size
	})
}
