// Package store is trove's local content-addressed store: Nix-exact NAR
// encoding and decoding, Nix base32, store path computation, PathInfo, the
// Store itself (Badger metadata beside the physical trees), content-defined
// chunking with a chunk index per NAR, verification, garbage collection and
// import from a local Nix store.
//
// The invariant the package keeps: a path is valid only when its tree is
// complete on disk, its NAR hashes to the recorded narHash, and every path it
// references is valid. Every write goes to a temporary directory, is fsynced
// and renamed into place, and only then becomes valid in one Badger
// transaction, so a crash at any point leaves a consistent store.
//
// store knows nothing of peers.
package store
