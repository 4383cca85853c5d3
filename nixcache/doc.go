// Package nixcache speaks Nix's binary-cache protocol, both ways: it serves
// a trove store to Nix clients over HTTP (nix-cache-info, narinfo and NARs
// streamed from the store's trees, signed with the agent's key, optionally
// fetching missing paths from the swarm on demand), and it imports closures
// from Nix binary caches (file:// and http(s)://, uncompressed, xz, zstd or
// bzip2), believing a path only through a trusted signature or a content
// address that recomputes, and verifying every NAR against its narHash.
//
// The narinfo parser is strict: required fields, well-formed values, no
// duplicates, so that bytes from a cache are refused with a clear error
// rather than half understood.
//
// nixcache knows nothing of peers or of a particular store: it serves a
// Store and imports into a Target (interfaces it defines, store.go), and
// serving from the swarm goes through the Source interface, which the agent
// implements with p2p and fetch (agent/cachepeers.go). What a cache says
// is believed only as package trust decides.
package nixcache
