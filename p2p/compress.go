package p2p

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
)

// Chunks may travel zstd-compressed. The asker says it wants that
// (ChunkWant.Zstd: it measured the link from this peer to be slow enough
// for compression to pay, see fetch); the server then compresses each
// chunk at zstd's fastest level and sends the frame only if it is
// smaller by at least 1/16, and stops trying for a while on a peer whose
// chunks do not shrink (already-compressed data, random bytes). The
// chunk's ID is the hash of the uncompressed bytes, so verification is
// unchanged; the asker decodes into a buffer of exactly the chunk's size,
// and a frame that declares, or decodes to, more is refused without
// allocating for it (a decompression bomb).

// zstdWindow bounds the window a chunk's frame may use: a chunk is at
// most chunk.MaxSize, and a decoder must not be told to allocate more.
const zstdWindow = 1 << 20

var (
	zenc, _ = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(4),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(false), // the chunk's hash is checked
		zstd.WithWindowSize(zstdWindow))
	zdec, _ = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(4),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(chunk.MaxSize),
		zstd.WithDecoderMaxWindow(zstdWindow),
		zstd.WithDecodeAllCapLimit(true))
)

// compressChunk returns data compressed into dst's memory, or nil if it
// does not shrink by at least 1/16.
func compressChunk(dst, data []byte) []byte {
	out := zenc.EncodeAll(data, dst[:0])
	if len(out) > len(data)-len(data)/16 {
		return nil
	}
	return out
}

// errInflates is why a compressed chunk was refused.
var errInflates = errors.New("compressed chunk does not decode to its size")

// decompressChunk decodes frame, which must hold exactly size bytes
// (at most chunk.MaxSize), into dst (whose capacity must be at least
// size plus one zstd block: the decoder checks the size after each
// block). Anything else is refused before more is allocated.
func decompressChunk(dst, frame []byte, size uint32) ([]byte, error) {
	if size > chunk.MaxSize || cap(dst) < int(size)+zstdBlock {
		return nil, fmt.Errorf("%w: %d bytes", errInflates, size)
	}
	out, err := zdec.DecodeAll(frame, dst[:0:int(size)+zstdBlock])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInflates, err)
	}
	if len(out) != int(size) {
		return nil, fmt.Errorf("%w: %d bytes, want %d", errInflates, len(out), size)
	}
	return out, nil
}

// zstdBlock is the most a zstd block decodes to: the decoder's output
// may pass a limit by up to this before it notices.
const zstdBlock = 128 << 10

// shrinks tracks, per peer a node serves compressed, whether its chunks
// shrink: after missesToPause chunks in a row that did not, it stops
// trying for pauseChunks chunks, then tries again (the data may change).
type shrinks struct {
	mu sync.Mutex
	m  map[peer.ID]*shrinkState
}

type shrinkState struct{ misses, skip int }

const (
	missesToPause = 8
	pauseChunks   = 256
)

// try says whether to try compressing the next chunk for p.
func (s *shrinks) try(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[p]
	if st == nil || st.skip == 0 {
		return true
	}
	st.skip--
	return false
}

// result records whether a chunk compressed for p shrank.
func (s *shrinks) result(p peer.ID, shrank bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[peer.ID]*shrinkState{}
	}
	st := s.m[p]
	if st == nil {
		st = &shrinkState{}
		s.m[p] = st
	}
	if shrank {
		st.misses = 0
		return
	}
	if st.misses++; st.misses >= missesToPause {
		st.misses, st.skip = 0, pauseChunks
	}
}

// forget drops what was learnt of p (it went away).
func (s *shrinks) forget(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, p)
}
