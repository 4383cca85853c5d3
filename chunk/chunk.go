package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/zeebo/blake3"
)

// Content-defined chunk sizes. 64 KiB on average keeps the chunk index of a
// 1 GiB NAR at about 16k entries (≈600 KiB), small enough to send in one
// message and to sign through a manifest, while an edit or a rewritten store
// path reference costs one ~64 KiB chunk rather than a whole file. The
// 16 KiB floor bounds per-chunk overhead (a key in Badger, a request on the
// wire); the 256 KiB ceiling bounds memory per chunk in flight and the work
// lost to one bad chunk.
const (
	MinSize = 16 << 10
	AvgSize = 64 << 10
	MaxSize = 256 << 10
)

// ID is the BLAKE3-256 digest of a chunk's bytes: a plain value, turned
// into a CIDv1 (raw codec, blake3 multihash) at the edges.
type ID [32]byte

// Sum computes the ID of data.
func Sum(data []byte) ID { return ID(blake3.Sum256(data)) }

// CID is the CIDv1 (raw, blake3) of the chunk.
func (c ID) CID() cid.Cid {
	m, _ := mh.Encode(c[:], mh.BLAKE3) // cannot fail: 32 bytes, known code
	return cid.NewCidV1(cid.Raw, m)
}

func (c ID) String() string { return c.CID().String() }

// IDFromCID accepts only what CID produces: v1, raw codec, blake3-256.
func IDFromCID(c cid.Cid) (ID, error) {
	var id ID
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw {
		return id, fmt.Errorf("chunk CID %s: want CIDv1 with the raw codec", c)
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return id, fmt.Errorf("chunk CID %s: %w", c, err)
	}
	if d.Code != mh.BLAKE3 || len(d.Digest) != len(id) {
		return id, fmt.Errorf("chunk CID %s: want a 32-byte blake3 multihash", c)
	}
	copy(id[:], d.Digest)
	return id, nil
}

// ParseID parses the string form of a chunk CID.
func ParseID(s string) (ID, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return ID{}, fmt.Errorf("chunk CID %q: %w", s, err)
	}
	return IDFromCID(c)
}

// Ref is one entry of a chunk index.
type Ref struct {
	ID   ID
	Size uint32
}

// Index lists, in order, the chunks whose concatenation is one NAR.
// A chunk's offset in the NAR is the sum of the sizes before it.
type Index []Ref

// NarSize is the total size of the chunks.
func (ix Index) NarSize() uint64 {
	var n uint64
	for _, c := range ix {
		n += uint64(c.Size)
	}
	return n
}

// Offsets returns the NAR offset of every chunk.
func (ix Index) Offsets() []uint64 {
	offs := make([]uint64, len(ix))
	var n uint64
	for i, c := range ix {
		offs[i] = n
		n += uint64(c.Size)
	}
	return offs
}

const indexVersion = 1

// Encode is the canonical encoding: a version byte, the count, then each
// chunk's 32-byte ID and size as uvarints.
func (ix Index) Encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(ix)*(32+3))
	b = append(b, indexVersion)
	b = binary.AppendUvarint(b, uint64(len(ix)))
	for _, c := range ix {
		b = append(b, c.ID[:]...)
		b = binary.AppendUvarint(b, uint64(c.Size))
	}
	return b
}

// ID content-addresses the index: the chunk ID of its encoding.
func (ix Index) ID() ID { return Sum(ix.Encode()) }

// ErrBadIndex is wrapped by errors decoding a chunk index.
var ErrBadIndex = errors.New("invalid chunk index")

// DecodeIndex parses an encoded index strictly: every chunk between
// 1 byte and MaxSize, nothing trailing, the encoding canonical.
func DecodeIndex(b []byte) (Index, error) {
	bad := func(f string, a ...any) (Index, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadIndex, fmt.Sprintf(f, a...))
	}
	if len(b) == 0 || b[0] != indexVersion {
		return bad("unknown version")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return bad("bad count")
	}
	b = b[k:]
	if n > uint64(len(b)/33) {
		return bad("count %d does not fit in %d bytes", n, len(b))
	}
	ix := make(Index, n)
	for i := range ix {
		if len(b) < 33 {
			return bad("truncated")
		}
		copy(ix[i].ID[:], b)
		b = b[32:]
		sz, k := binary.Uvarint(b)
		if k <= 0 || sz == 0 || sz > MaxSize {
			return bad("chunk %d: bad size", i)
		}
		if k != len(binary.AppendUvarint(nil, sz)) {
			return bad("chunk %d: non-canonical size", i)
		}
		ix[i].Size = uint32(sz)
		b = b[k:]
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return ix, nil
}

// IndexNAR cuts the NAR on r into content-defined chunks and hashes each.
func IndexNAR(r io.Reader) (Index, error) {
	var ix Index
	err := chunkStream(r, func(data []byte) error {
		ix = append(ix, Ref{ID: Sum(data), Size: uint32(len(data))})
		return nil
	})
	return ix, err
}

// chunkStream calls fn with each chunk of r; data is only valid during fn.
func chunkStream(r io.Reader, fn func(data []byte) error) error {
	c := newCDCReader(r)
	for {
		data, err := c.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(data); err != nil {
			return err
		}
	}
}
