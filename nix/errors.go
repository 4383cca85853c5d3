package nix

import "errors"

// The errors every store returns, whichever implementation: callers
// branch on them with errors.Is.
var (
	// ErrNotValid reports that a path is not valid in the store: absent,
	// or present without its whole closure.
	ErrNotValid = errors.New("path is not valid in the store")
	// ErrHashMismatch reports that a NAR's hash or size differs from what
	// its PathInfo (or chunk index, or content address) promised.
	ErrHashMismatch = errors.New("NAR hash mismatch")
)
