// Package store is trove's embedded content-addressed store: Badger
// metadata (PathInfos, reverse references, chunk indexes and where each
// chunk's bytes lie, skeletons) beside the physical trees, one-pass ingest
// of a NAR (tree, narHash and chunk index together), NARs and chunks
// served back from the trees, verification, garbage collection, the
// home's lock, and import from a local Nix store. The formats it stores
// are package nix's and package chunk's; store/storetest is the contract
// it, and any other store, passes.
//
// The invariant the package keeps: a path is valid only when its tree is
// complete on disk, its NAR hashes to the recorded narHash, and every path it
// references is valid. Every write goes to a temporary directory and is
// renamed into place, and only then becomes valid in one Badger
// transaction, so a crash at any point leaves a consistent store.
//
// Trees are not fsynced one by one (Nix does not sync store contents
// either). A path is registered with an unsynced mark holding the kernel's
// boot ID; Store.Sync (one syncfs) makes every written tree durable and
// clears the marks. A process killed with -9 loses nothing, since the page
// cache survives it; after a reboot the boot ID differs, so Open
// re-verifies every path still marked and removes the damaged ones with
// their referrers. A valid path is always durable or re-checked before it
// is trusted.
//
// store knows nothing of peers, manifests or policy.
package store
