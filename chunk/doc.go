// Package chunk cuts NARs into content-defined chunks and names them:
// FastCDC (16 KiB minimum, 64 KiB average, 256 KiB maximum), chunk IDs
// (BLAKE3-256, a comparable value, a CIDv1 with the raw codec at the
// edges), and the chunk index, the ordered list of (ID, length) that makes
// up one NAR and is itself content-addressed.
//
// The boundaries and IDs are a format: two machines must cut the same NAR
// the same way for their chunks to dedup, so they are pinned by a golden
// test. It imports no other trove package.
package chunk
