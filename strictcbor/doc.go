// Package strictcbor decodes CBOR from outside (peers, manifests,
// bundles) strictly and within limits on what the decoding builds.
//
// Wire bytes are a poor measure of decoded memory: an empty string costs
// one byte on the wire and a 16-byte header in Go, an empty map a byte
// and a whole struct. So a Decoder walks a message once, allocating
// nothing, and refuses it when its data items, the elements of any one
// array, its nesting, or the bytes its decoded form would take exceed the
// message type's Limits; only then does fxamacker/cbor decode it (refusing
// unknown fields, duplicate keys, indefinite lengths and tags). NewDecoder
// is the one place a decoder is set up; each format passes its message
// type's caps. Marshal is the matching canonical encoder.
package strictcbor
