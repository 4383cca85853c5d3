package bundle

import (
	"context"
	"io"

	"github.com/trove-p2p/trove/nix"
)

// Source is what creating a bundle reads from a store: the closures it
// carries and their NARs.
type Source interface {
	StoreDir() string
	IsValid(p nix.Path) (bool, error)
	Closure(roots ...nix.Path) ([]*nix.PathInfo, error)
	WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error
}

// Target is what importing a bundle writes to: a store that verifies each
// NAR against its believed PathInfo as it adds it, and keeps a path
// invalid until its references are valid (see store/storetest).
type Target interface {
	StoreDir() string
	IsValid(p nix.Path) (bool, error)
	AddNAR(ctx context.Context, info *nix.PathInfo, r io.Reader) (*nix.PathInfo, error)
}
