package p2p

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Chunks may travel zstd-compressed. The asker says it wants that on the
// first request of a chunks stream (ChunkRequest.Zstd: it measured the
// link from this peer to be slow enough for compression to pay, see
// fetch); the server then sends all its answers on that stream, headers
// and data, as one zstd stream, flushed whenever it flushes its buffer.
// One stream for all the chunks, not a frame per chunk: chunks of a
// closure share most of their words (source files, manifests, ELF
// tables), and a frame per 64 KiB chunk lost that: of Go's runtime
// source over 20 Mbit/s, frames sent 5.0 MiB and the stream sends 4.4
// (`trove bench compress`, before and after this change). Data that does not
// shrink goes as zstd's raw blocks, a few bytes per 128 KiB.
//
// Nothing changes inside: each answer's header still gives the chunk's
// size, checked against what was asked, and the chunk is verified against
// its ID. A decoder's window is bounded (zstdWindow; a stream asking for
// more is refused as it starts), and the asker reads no more than the
// answers it asked for, whatever a stream would decode to: a
// decompression bomb costs one window.

// zstdWindow bounds the window a compressed answer stream may use, so the
// memory a decoder holds for it.
const zstdWindow = 1 << 20

// zstdEncoderMem is what a compressing chunks stream is charged for its
// encoder (its window and tables at zstdLevel: 6.3 MiB measured).
const zstdEncoderMem = 7 << 20

// zstdLevel is klauspost's "better" level, about zstd's 7: on Go's
// runtime source, a stream at the default level (about zstd's 3) came
// out 3% larger than Nix's `zstd -3` NAR and this one 2% smaller, at
// about 90 MB/s of one core here, which a link slow enough to compress
// on (under 40 MB/s) does not notice.
const zstdLevel = zstd.SpeedBetterCompression

var (
	zencs = sync.Pool{New: func() any {
		w, _ := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstdLevel),
			zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false), // every chunk's hash is checked
			zstd.WithWindowSize(zstdWindow))
		return w
	}}
	zdecs = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdWindow),
			zstd.WithDecoderMaxMemory(zstdWindow))
		return d
	}}
)

// compressTo returns an encoder writing one zstd stream to w; Close ends
// the stream, releaseEncoder returns the encoder.
func compressTo(w io.Writer) *zstd.Encoder {
	e := zencs.Get().(*zstd.Encoder)
	e.Reset(w)
	return e
}

func releaseEncoder(e *zstd.Encoder) {
	e.Reset(io.Discard)
	zencs.Put(e)
}

// answerStream reads a compressed answer stream from p: what does not
// decode is bad data from p; a failure of the stream under it (a reset,
// a stall) is passed on as it is.
type answerStream struct {
	d   *zstd.Decoder
	src *recordErr
	p   peer.ID
}

// recordErr remembers the error its reader returned.
type recordErr struct {
	r   io.Reader
	err error
}

func (r *recordErr) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil {
		r.err = err
	}
	return n, err
}

func decompressFrom(r io.Reader, p peer.ID) (*answerStream, error) {
	src := &recordErr{r: r}
	d := zdecs.Get().(*zstd.Decoder)
	if err := d.Reset(src); err != nil {
		zdecs.Put(d)
		return nil, err
	}
	return &answerStream{d, src, p}, nil
}

func (a *answerStream) Read(b []byte) (int, error) {
	n, err := a.d.Read(b)
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return n, err
	}
	if a.src.err != nil && !errors.Is(a.src.err, io.EOF) {
		return n, a.src.err // the stream failed, not the data
	}
	return n, &BadDataError{Peer: a.p, Detail: fmt.Sprintf("compressed answers do not decode: %v", err)}
}

func (a *answerStream) release() {
	a.d.Reset(nil)
	zdecs.Put(a.d)
}
