// Package bundle carries closures where the network does not reach: it
// writes a closure, its PathInfos and the signed manifests that vouch for
// them into one file (for a USB stick or an air-gapped machine), imports
// such a file verifying everything, and writes the `nix-store --export`
// format that `nix-store --import` reads.
//
// # The bundle format (version 2)
//
// All integers are u64 little-endian; a blob is a u64 length and that many
// bytes (no padding). In order:
//
//	magic      the 16 bytes "\x89trove-bundle\r\n\x1a" (the high byte and
//	           CR LF catch 7-bit and line-ending mangling)
//	version    u64 2
//	store dir  blob, at most 4095 bytes: the logical store directory the
//	           paths are named under (it is part of every path's hash)
//	manifests  u64 n ≤ 256, then n blobs of at most manifest.MaxManifestSize
//	           bytes: signed manifests exactly as manifest.Encode writes them
//	infos      u64 n ≤ 2^20, then n blobs of at most 1 MiB: one PathInfo each,
//	           in nix.CBORInfo's canonical CBOR (1 path "<hash>-<name>",
//	           2 narHash (32 bytes), 3 narSize, 4 references (sorted
//	           unique base names), 5 deriver, 6 CA, 8 signatures; no
//	           chunk index), references before their referrers
//	NARs       for each info in the same order: u64 narSize (equal to the
//	           info's) and that many bytes of the path's NAR
//	trailer    the 16 bytes "trove-bundle-end", then the end of the file
//
// Version 1 differs only in the infos' keys (6 signatures, 7 CA); it is
// still read, and never written.
//
// The manifests and infos (the head) take at most 256 MiB together. Every
// length is checked against its cap before anything is read, and nothing is
// allocated ahead of the bytes that actually arrive.
//
// # What an import believes
//
// A bundle is outside input: only hashes with a trusted root make anything
// in it valid. Import reads the whole head first and decides, before the
// first NAR byte, which paths it will add and why each is believable (the
// rule is package trust's, the one sync and the cache import ask too):
//
//   - a manifest in the bundle lists the path with the same name, narHash,
//     size, references, deriver and CA, and that manifest is signed by a key
//     trusted for its configuration name and passes the history's rules
//     (not older than the newest generation known here, unless it is that
//     very manifest again); or
//   - one of the path's signatures verifies under a trusted key (Nix's
//     fingerprint); or
//   - its CA is "fixed:r:sha256:…" and the store path recomputes from it;
//   - or ImportOptions.NoCheckSigs (for tests) believes everything.
//
// A path with none of these refuses the whole bundle, as does an untrusted
// or stale manifest, a manifest whose closure is neither in the bundle nor
// already here, a reference that is neither earlier in the bundle nor valid
// here, or another store directory. Then the NARs are read in order: each
// is added with the Target's AddNAR against its believed narHash and size, which
// unpacks and hashes it and makes the path valid only if it matches. Paths
// already valid are skipped (seeking over their NARs when the input can
// seek). Only after the trailer are the manifests recorded in the history.
//
// So every path becomes valid only after its info was believed and its
// NAR verified, and only after its references (references come first): the
// store's closure invariant holds at every point. A bundle that is
// truncated or damaged part-way leaves valid exactly the complete, verified
// paths before the damage (each with its whole closure), records no
// manifest, and returns an error; importing an intact copy later adds the
// rest. A bundle with nothing new (every path valid here and every manifest
// already known byte for byte) is accepted without reading past the head.
//
// bundle uses store and manifest; it knows nothing of peers.
package bundle
