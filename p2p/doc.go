// Package p2p is trove's network layer: the libp2p host and its identity,
// discovery (mDNS, static peers, the Kademlia DHT), the trust-group
// connection gater, resource limits, and the wire protocols (have, info,
// chunks, manifest and announce, plus announcements gossiped on a
// gossipsub topic per configuration name): a server that answers them from
// a Content source and a ManifestSource, and the client calls on Node
// (Have, Info, InfoClosure, Fetch, Manifest, Announce) that ask them.
//
// p2p speaks wire formats but decides nothing: what to fetch and from whom
// is package fetch's job. Every message is length-prefixed, size-capped and
// CBOR-encoded with strict decoding; a peer that breaks the protocol has its
// stream reset and its connection closed.
package p2p
