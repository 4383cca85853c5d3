package p2p

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/strictcbor"
)

// Protocol IDs. A change to a message bumps the version; a peer speaking
// only an older one gets "protocols not supported" from libp2p (and our
// client says the peer runs an older trove).
//
// info 2.0.0 carries PathInfos in nix.CBORInfo's layout, the manifest's
// (CA 6, signatures 8, chunk index 9; 1.0.0 had signatures 6, CA 7, chunk
// index 8). 1.0.0 is neither served nor asked.
//
// chunks 2.0.0 let a request say it may be deferred (Defer) and a server
// answer Later (upload.go); 3.0.0 compresses a whole stream of answers
// when its first request asks (compress.go), where 2.0.0 compressed each
// chunk on its own; 4.0.0 names, in a Later answer, the peer the chunk
// went to (ChunkHeader.To). No older version is served nor asked.
const (
	ProtoHave   protocol.ID = "/trove/have/1.0.0"
	ProtoInfo   protocol.ID = "/trove/info/2.0.0"
	ProtoChunks protocol.ID = "/trove/chunks/4.0.0"
	// ProtoHaves carries subscriptions to what a peer holds, chunk by
	// chunk, of the paths of a sync (haves.go).
	ProtoHaves protocol.ID = "/trove/haves/1.0.0"
)

// Caps. A request larger than these is a protocol violation.
const (
	// MaxHaveHashes is the most path hashes one have request may carry;
	// clients split larger queries.
	MaxHaveHashes = 4096
	// MaxInfoHashes is the most paths one info request may ask about.
	MaxInfoHashes = 64
	// MaxRangeLen is the longest NAR byte range one chunks request may ask.
	MaxRangeLen = 4 << 20
	// MaxInfoResponse caps an info response: the chunk index of a 64 GiB NAR.
	MaxInfoResponse = 48 << 20
	maxRequest      = 256 << 10
	maxChunkHeader  = 1 << 10
	maxHaveResponse = MaxHaveHashes/8 + 64

	// MaxClosureInfos is the most PathInfos one info answer may carry; a
	// closure answer cut there says Truncated.
	MaxClosureInfos = MaxHaveHashes
	// MaxReferences is the most references one PathInfo may have (real
	// paths have a few hundred at most); a path with more cannot travel.
	MaxReferences = nix.MaxReferences
	// MaxSigs is the most signatures one PathInfo may carry.
	MaxSigs = nix.MaxSigs
	// maxInfoItems caps the CBOR data items of one info answer, and so
	// what decoding it builds besides its payload bytes (24 bytes each, 6
	// MiB): MaxClosureInfos infos of nix.CBORInfoItems each, plus 128 Ki references
	// and signatures in all (32 per path on average; a NixOS closure of
	// 3000 paths has about 8).
	maxInfoItems = MaxClosureInfos*nix.CBORInfoItems + 1<<17
)

// ErrProtocol is wrapped by every error caused by a peer breaking the
// protocol: oversized, truncated or malformed messages.
var ErrProtocol = errors.New("protocol violation")

// HaveRequest asks which of a batch of store paths the peer holds.
type HaveRequest struct {
	Hashes [][]byte `cbor:"1,keyasint"` // 20-byte store path digests
}

// HaveResponse answers with bit i (LSB first) set iff Hashes[i] is valid there.
type HaveResponse struct {
	Bitmap []byte `cbor:"1,keyasint"`
}

// InfoRequest asks for the PathInfos and chunk indexes of store paths, or,
// with Closure, of everything in their closures (one round trip instead of
// one per level of the reference graph).
type InfoRequest struct {
	Hashes  [][]byte `cbor:"1,keyasint"`
	Closure bool     `cbor:"2,keyasint,omitempty"`
}

// InfoResponse has one entry per requested hash, nil where the peer does not
// hold the path. For a Closure request it lists the closure instead,
// referrers first (so an answer cut short holds every referrer of what it
// holds), and Truncated says the size cap cut it short.
type InfoResponse struct {
	Infos     []*WireInfo `cbor:"1,keyasint"`
	Truncated bool        `cbor:"2,keyasint,omitempty"`
}

// WireInfo is a PathInfo as it travels: nix's one PathInfo codec, with
// signatures and the encoded chunk index (wireFields).
type WireInfo = nix.CBORInfo

// wireFields are the optional PathInfo fields an info answer carries.
const wireFields = nix.InfoWire

// ChunkRequest asks for one chunk by ID (Chunk set, Size its length per the
// chunk index) or for a NAR byte range of a path (Path, Offset, Length).
// Seq is echoed in the response header. Defer (a chunk request only) says
// the asker fetches in a swarm and may be answered Later. Zstd on the
// first request of a stream asks for all its answers as one zstd stream
// (compress.go); on later requests it is ignored.
type ChunkRequest struct {
	Seq    uint64 `cbor:"1,keyasint"`
	Chunk  []byte `cbor:"2,keyasint,omitempty"`
	Size   uint32 `cbor:"3,keyasint,omitempty"`
	Path   []byte `cbor:"4,keyasint,omitempty"`
	Offset uint64 `cbor:"5,keyasint,omitempty"`
	Length uint32 `cbor:"6,keyasint,omitempty"`
	Defer  bool   `cbor:"7,keyasint,omitempty"`
	Zstd   bool   `cbor:"8,keyasint,omitempty"`
}

// ChunkHeader precedes Length raw bytes of data in a chunks stream. Err
// set means the server cannot serve this request; Later set (to a request
// that said Defer) means it sent this chunk to another peer, To, and
// asks the asker to get it there, or here again after Later
// milliseconds; Later and Busy, that it is sending to as many peers as
// it will at once. No data follows any of these.
type ChunkHeader struct {
	Seq    uint64 `cbor:"1,keyasint"`
	Length uint32 `cbor:"2,keyasint,omitempty"`
	Err    string `cbor:"3,keyasint,omitempty"`
	Later  uint32 `cbor:"4,keyasint,omitempty"`
	Busy   bool   `cbor:"5,keyasint,omitempty"`
	To     []byte `cbor:"6,keyasint,omitempty"`
}

// msgLimits bounds what decoding one message of wire bytes builds: items
// data items, arrays of at most array elements. Every message is a map of
// at most 8 keys, nested at most 4 deep (an info answer's references).
func msgLimits(wire, items, array int) *strictcbor.Decoder {
	return strictcbor.MustDecoder(strictcbor.Limits{Wire: wire, Items: items, Array: array, MapPairs: 8, Nested: 4})
}

// Decoders per message type: the wire cap alone does not bound what a
// message decodes to (an empty string is 1 byte on the wire, 16 in Go).
var (
	decHaveRequest  = msgLimits(maxRequest, MaxHaveHashes+8, MaxHaveHashes)
	decHaveResponse = msgLimits(maxHaveResponse, 8, 16)
	decInfoRequest  = msgLimits(maxRequest, MaxInfoHashes+8, MaxInfoHashes)
	decInfoResponse = msgLimits(MaxInfoResponse, maxInfoItems, max(MaxClosureInfos, MaxReferences))
	decWireInfo     = strictcbor.MustDecoder(nix.InfoLimits(MaxInfoResponse))
	decManifest     = msgLimits(MaxManifestBytes+64, 8, 16)
	decSmall        = msgLimits(maxRequest, 32, 16) // chunk requests and headers, manifest requests, announcements
)

// decoderFor picks the decoder for the message type v points to.
func decoderFor(v any) *strictcbor.Decoder {
	switch v.(type) {
	case *HaveRequest:
		return decHaveRequest
	case *HaveResponse:
		return decHaveResponse
	case *InfoRequest:
		return decInfoRequest
	case *InfoResponse:
		return decInfoResponse
	case *WireInfo:
		return decWireInfo
	case *ManifestResponse:
		return decManifest
	case *JoinRequest:
		return decJoinRequest
	case *JoinResponse, *GroupMessage:
		return decGroupMessage
	case *HavesRequest:
		return decHavesRequest
	case *Haves:
		return decHaves
	case *FleetStatus:
		return decFleet
	}
	return decSmall
}

// writeMsg writes v as a uvarint length and its CBOR encoding.
func writeMsg(w io.Writer, v any) error {
	b, err := strictcbor.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	if len(b) > 64<<10 {
		// A large answer is written as it is, not copied behind its
		// length: it costs its encoding once (which servers reserve).
		if _, err := w.Write(hdr[:n]); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
	if _, err := w.Write(append(hdr[:n:n], b...)); err != nil {
		return err
	}
	return nil
}

// readMsg reads one message of at most max bytes into v. io.EOF means the
// stream ended cleanly before a message. A message that is oversized,
// malformed or cut short by the end of the stream wraps ErrProtocol. An
// error of the stream itself (a reset, a deadline, a closed connection) is
// returned wrapped but without ErrProtocol: a peer that cancels, stalls or
// goes away has not broken the protocol.
func readMsg(r *bufio.Reader, max int, v any) error {
	_, err := readMsgIn(r, max, v, nil)
	return err
}

// readMsgIn is readMsg that calls reserve with the message's size before
// allocating for it (what it decodes to is bounded by its type's limits),
// and returns that count for the caller to release when done with v.
func readMsgIn(r *bufio.Reader, max int, v any, reserve func(n int) error) (held int, err error) {
	n, err := readLen(r, max)
	if err != nil {
		return 0, err
	}
	if reserve != nil {
		held = int(n)
		if err := reserve(held); err != nil {
			return 0, err
		}
	}
	if err := readBody(r, n, v); err != nil {
		return held, err
	}
	return held, nil
}

// readLen reads a message's length prefix and checks it against max.
func readLen(r *bufio.Reader, max int) (uint64, error) {
	br := byteReader{r: r}
	n, err := binary.ReadUvarint(&br)
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return 0, io.EOF
		case br.err != nil && !errors.Is(br.err, io.EOF):
			return 0, fmt.Errorf("reading message length: %w", br.err)
		}
		return 0, fmt.Errorf("%w: reading message length: %v", ErrProtocol, err)
	}
	if n > uint64(max) {
		return 0, fmt.Errorf("%w: message of %d bytes exceeds the cap of %d", ErrProtocol, n, max)
	}
	return n, nil
}

// readBody reads and decodes a message body of n bytes.
func readBody(r *bufio.Reader, n uint64, v any) error {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("reading a message: %w", err)
		}
		return fmt.Errorf("%w: truncated message: %v", ErrProtocol, err)
	}
	return decodeMsg(b, v)
}

// byteReader remembers the error of the reader under it, to tell a failing
// stream from a malformed length.
type byteReader struct {
	r   *bufio.Reader
	err error
}

func (b *byteReader) ReadByte() (byte, error) {
	c, err := b.r.ReadByte()
	if err != nil {
		b.err = err
	}
	return c, err
}

// decodeMsg decodes a message body within the limits of its type.
func decodeMsg(b []byte, v any) error {
	if err := decoderFor(v).Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return nil
}
