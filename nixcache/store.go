package nixcache

import (
	"context"
	"io"

	"github.com/trove-p2p/trove/nix"
)

// Store is what the cache endpoint serves from: narinfos from PathInfos,
// and NARs (whole, or from an offset) produced on demand.
type Store interface {
	StoreDir() string
	PathInfo(h nix.PathHash) (*nix.PathInfo, error)
	WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error
}

// Target is what an import from a binary cache writes to: a store that
// verifies each NAR against its believed PathInfo as it adds it, and keeps
// a path invalid until its references are valid (see store/storetest).
type Target interface {
	StoreDir() string
	IsValid(p nix.Path) (bool, error)
	AddNAR(ctx context.Context, info *nix.PathInfo, r io.Reader) (*nix.PathInfo, error)
}
