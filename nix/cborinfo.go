package nix

import (
	"fmt"
	"slices"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/strictcbor"
)

// CBORInfo is a PathInfo as every trove format carries it: wire info
// answers, manifest bodies and bundles. One map, one set of integer keys;
// each format carries a subset of the optional fields (InfoFields), and a
// field it does not carry is refused. Paths are base names
// (<hash32>-<name>), hashes raw bytes.
//
// The key numbers are the manifest's (format 1), so signed manifests keep
// their bytes; wire (/trove/info/2.0.0) and bundles (format 2) took them
// over from their own layouts.
type CBORInfo struct {
	Path       string   `cbor:"1,keyasint"`
	NarHash    []byte   `cbor:"2,keyasint"` // 32 bytes
	NarSize    uint64   `cbor:"3,keyasint"`
	References []string `cbor:"4,keyasint,omitempty"` // sorted, unique
	Deriver    string   `cbor:"5,keyasint,omitempty"`
	CA         string   `cbor:"6,keyasint,omitempty"`
	IndexID    []byte   `cbor:"7,keyasint,omitempty"` // chunk index ID (manifests)
	Sigs       []string `cbor:"8,keyasint,omitempty"`
	Index      []byte   `cbor:"9,keyasint,omitempty"` // the encoded chunk index (wire)
}

// InfoFields says which optional fields of CBORInfo a format carries.
type InfoFields uint8

const (
	// WithSigs: the info's signatures (wire, bundles; a manifest's own
	// signature covers its paths).
	WithSigs InfoFields = 1 << iota
	// WithIndexID: the chunk index ID, required (manifests).
	WithIndexID
	// WithIndex: the whole chunk index, required, covering narSize (wire).
	WithIndex
)

// The fields each trove format carries.
const (
	InfoWire     = WithSigs | WithIndex // p2p info answers
	InfoManifest = WithIndexID          // manifest bodies
	InfoBundle   = WithSigs             // bundles
)

// Caps on one PathInfo, in every format. Real paths have a few hundred
// references at most; a path with more cannot travel.
const (
	// MaxReferences is the most references one PathInfo may have.
	MaxReferences = 4096
	// MaxSigs is the most signatures one PathInfo may carry.
	MaxSigs = 64
	// MaxNarSize keeps sizes representable as int64 offsets.
	MaxNarSize = 1 << 62
	// CBORInfoItems is what a CBORInfo costs in CBOR data items besides its
	// references and signatures: a map of at most 9 keys and values.
	CBORInfoItems = 19
)

// InfoLimits are the strictcbor limits of one CBORInfo on its own, of at
// most wire bytes, for a format's decoder of a single info.
func InfoLimits(wire int) strictcbor.Limits {
	return strictcbor.Limits{
		Wire: wire, Items: CBORInfoItems + MaxReferences + MaxSigs, Array: MaxReferences, MapPairs: 9, Nested: 2,
	}
}

// ToCBOR converts pi to the fields f carries; ix is the chunk index for
// WithIndex (else ignored).
func ToCBOR(pi *PathInfo, f InfoFields, ix chunk.Index) *CBORInfo {
	c := &CBORInfo{Path: pi.Path.String(), NarHash: pi.NarHash[:], NarSize: pi.NarSize,
		References: pi.RefNames(), Deriver: pi.DeriverName(), CA: pi.CA}
	if f&WithSigs != 0 {
		c.Sigs = pi.Sigs
	}
	if f&WithIndexID != 0 {
		c.IndexID = pi.ChunkIndex[:]
	}
	if f&WithIndex != 0 {
		c.Index = ix.Encode()
	}
	return c
}

// PathInfo checks that c is a well-formed info of a format carrying f and
// converts it: every name a base name, narHash 32 bytes, narSize neither
// zero nor above MaxNarSize, references sorted and unique and at most
// MaxReferences, at most MaxSigs signatures, no field f does not carry,
// and the chunk index (WithIndex) covering narSize. The chunk index is
// returned for WithIndex, else nil. It says nothing about whether the info
// is true: that is package trust's question.
func (c *CBORInfo) PathInfo(f InfoFields) (*PathInfo, chunk.Index, error) {
	if len(c.References) > MaxReferences || len(c.Sigs) > MaxSigs {
		return nil, nil, fmt.Errorf("%s: %d references and %d signatures, at most %d and %d", c.Path, len(c.References), len(c.Sigs), MaxReferences, MaxSigs)
	}
	switch {
	case f&WithSigs == 0 && len(c.Sigs) > 0:
		return nil, nil, fmt.Errorf("%s: signatures where this format carries none", c.Path)
	case f&WithIndexID == 0 && len(c.IndexID) > 0:
		return nil, nil, fmt.Errorf("%s: a chunk index ID where this format carries none", c.Path)
	case f&WithIndex == 0 && len(c.Index) > 0:
		return nil, nil, fmt.Errorf("%s: a chunk index where this format carries none", c.Path)
	}
	pi, err := PathInfoFromNames(c.Path, c.NarHash, c.NarSize, c.References, c.Deriver)
	if err != nil {
		return nil, nil, err
	}
	if c.NarSize > MaxNarSize {
		return nil, nil, fmt.Errorf("%s: narSize %d is too large", c.Path, c.NarSize)
	}
	for i := 1; i < len(pi.References); i++ {
		if pi.References[i-1].Compare(pi.References[i]) >= 0 {
			return nil, nil, fmt.Errorf("%s: references not sorted and unique", c.Path)
		}
	}
	pi.CA = c.CA
	if len(c.Sigs) > 0 {
		pi.Sigs = slices.Clone(c.Sigs)
	}
	var ix chunk.Index
	if f&WithIndexID != 0 {
		if len(c.IndexID) != len(pi.ChunkIndex) {
			return nil, nil, fmt.Errorf("%s: bad chunk index ID", c.Path)
		}
		pi.ChunkIndex = chunk.ID(c.IndexID)
	}
	if f&WithIndex != 0 {
		if ix, err = chunk.DecodeIndex(c.Index); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", c.Path, err)
		}
		if ix.NarSize() != c.NarSize {
			return nil, nil, fmt.Errorf("%s: chunk index covers %d bytes, narSize is %d", c.Path, ix.NarSize(), c.NarSize)
		}
		pi.ChunkIndex = ix.ID()
	}
	return pi, ix, nil
}

// Items is what c costs in CBOR data items, at most: a sender keeps a
// message of many infos within its decoder's item cap with it.
func (c *CBORInfo) Items() int { return CBORInfoItems + len(c.References) + len(c.Sigs) }

// SizeBound bounds c's encoded size from above: its payloads, and 9 bytes
// of head for each item.
func (c *CBORInfo) SizeBound() int {
	n := len(c.Path) + len(c.NarHash) + len(c.Deriver) + len(c.CA) + len(c.IndexID) + len(c.Index) + 9*c.Items()
	for _, r := range c.References {
		n += len(r)
	}
	for _, s := range c.Sigs {
		n += len(s)
	}
	return n
}
