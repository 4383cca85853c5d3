// Package nix holds Nix's formats, byte-exact with Nix and free of any
// database: nix base32 and hashes (Hash), store paths and their
// computation (Path, PathHash, MakeSourcePath, MakeFixedOutputPath,
// MakeTextPath), PathInfo (with its signing fingerprint and content
// address), the `nix path-info --json` form, and NAR: writing the NAR of a
// tree (DumpNAR, WalkNAR with its skeleton segments), reading one strictly
// (ReadNAR, ReadNARSkeleton) and restoring it as a tree (RestoreNAR,
// TreeWriter, with disk extents reserved ahead of the bytes written).
//
// Everything here is checked against the real nix-store in tests. It
// imports no other trove package but chunk (a PathInfo names its chunk
// index), so every layer can use it, and a second store implementation
// (Nix's own) can share it.
package nix
