package bundle

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/strictcbor"
)

// Format constants and caps; doc.go describes the layout.
const (
	magic   = "\x89trove-bundle\r\n\x1a"
	trailer = "trove-bundle-end"
	// formatVersion 2 carries PathInfos in nix.CBORInfo's layout (CA 6,
	// signatures 8); version 1 (signatures 6, CA 7) is still read.
	formatVersion = 2

	maxStoreDir  = 4095
	maxManifests = 256
	maxInfos     = 1 << 20
	maxInfoSize  = 1 << 20
	maxHeadSize  = 256 << 20
)

// ErrBadBundle is wrapped by every error about a malformed bundle.
var ErrBadBundle = errors.New("invalid bundle")

// infoFields are the optional PathInfo fields a bundle carries: the
// signatures, not the chunk index (the importer chunks each NAR itself).
const infoFields = nix.InfoBundle

// v1Info is a PathInfo in a format 1 bundle, read only: the fields of
// nix.CBORInfo under format 1's keys.
type v1Info struct {
	Path       string   `cbor:"1,keyasint"`
	NarHash    []byte   `cbor:"2,keyasint"`
	NarSize    uint64   `cbor:"3,keyasint"`
	References []string `cbor:"4,keyasint,omitempty"`
	Deriver    string   `cbor:"5,keyasint,omitempty"`
	Sigs       []string `cbor:"6,keyasint,omitempty"`
	CA         string   `cbor:"7,keyasint,omitempty"`
}

// decInfo bounds what decoding one info builds.
var decInfo = strictcbor.MustDecoder(nix.InfoLimits(maxInfoSize))

func encodeInfo(pi *nix.PathInfo) ([]byte, error) {
	return strictcbor.Marshal(nix.ToCBOR(pi, infoFields, nil))
}

// decodeInfo parses one info of a bundle of format version strictly: what
// it claims is checked later.
func decodeInfo(b []byte, version uint64) (*nix.PathInfo, error) {
	var c nix.CBORInfo
	if version == 1 {
		var w v1Info
		if err := decInfo.Unmarshal(b, &w); err != nil {
			return nil, err
		}
		c = nix.CBORInfo{Path: w.Path, NarHash: w.NarHash, NarSize: w.NarSize, References: w.References,
			Deriver: w.Deriver, CA: w.CA, Sigs: w.Sigs}
	} else if err := decInfo.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	pi, _, err := c.PathInfo(infoFields)
	return pi, err
}

// --- writing ---------------------------------------------------------------

func appendU64(b []byte, n uint64) []byte { return binary.LittleEndian.AppendUint64(b, n) }

func appendBlob(b, blob []byte) []byte { return append(appendU64(b, uint64(len(blob))), blob...) }

// encodeHead is everything before the NARs.
func encodeHead(storeDir string, manifests [][]byte, infos []*nix.PathInfo) ([]byte, error) {
	return encodeHeadOf(formatVersion, encodeInfo, storeDir, manifests, infos)
}

// encodeHeadOf is the head of a bundle of format version whose infos enc
// encodes (the tests write format 1 with it).
func encodeHeadOf(version uint64, enc func(*nix.PathInfo) ([]byte, error), storeDir string, manifests [][]byte, infos []*nix.PathInfo) ([]byte, error) {
	if len(manifests) > maxManifests {
		return nil, fmt.Errorf("%d manifests: a bundle holds at most %d", len(manifests), maxManifests)
	}
	if len(infos) > maxInfos {
		return nil, fmt.Errorf("%d paths: a bundle holds at most %d; split it", len(infos), maxInfos)
	}
	b := appendU64([]byte(magic), version)
	b = appendBlob(b, []byte(storeDir))
	b = appendU64(b, uint64(len(manifests)))
	for _, m := range manifests {
		b = appendBlob(b, m)
	}
	b = appendU64(b, uint64(len(infos)))
	for _, pi := range infos {
		e, err := enc(pi)
		if err != nil {
			return nil, err
		}
		if len(e) > maxInfoSize {
			return nil, fmt.Errorf("%s: its path info takes %d bytes, at most %d", pi.Path, len(e), maxInfoSize)
		}
		b = appendBlob(b, e)
	}
	if len(b) > maxHeadSize {
		return nil, fmt.Errorf("the manifests and path infos take %d bytes, at most %d; split the bundle", len(b), maxHeadSize)
	}
	return b, nil
}

// --- reading ---------------------------------------------------------------

// head is everything before the NARs, parsed but not yet believed.
type head struct {
	storeDir  string
	manifests [][]byte
	infos     []*nix.PathInfo
	index     map[nix.PathHash]int // into infos
}

// reader reads a bundle strictly, front to back. It tracks its offset for
// error messages and can skip a NAR by seeking when the input can seek.
type reader struct {
	br   *bufio.Reader
	src  io.Reader
	off  int64
	head int64 // bytes of head read so far
}

func newReader(r io.Reader) *reader {
	return &reader{br: bufio.NewReaderSize(r, 1<<20), src: r}
}

func (r *reader) bad(format string, a ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrBadBundle, r.off, fmt.Sprintf(format, a...))
}

// full reads exactly len(p) bytes; running out is a truncated bundle.
func (r *reader) full(p []byte) error {
	n, err := io.ReadFull(r.br, p)
	r.off += int64(n)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.bad("truncated")
	}
	return err
}

func (r *reader) u64() (uint64, error) {
	var b [8]byte
	if err := r.full(b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// blob reads a length-prefixed blob of at most max bytes. The buffer grows
// with the bytes that arrive, never ahead of them from the claimed length.
func (r *reader) blob(max uint64, what string) ([]byte, error) {
	n, err := r.u64()
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, r.bad("%s of %d bytes, at most %d", what, n, max)
	}
	if r.head += int64(n); r.head > maxHeadSize {
		return nil, r.bad("the manifests and path infos exceed %d bytes", maxHeadSize)
	}
	var buf bytes.Buffer
	m, err := io.CopyN(&buf, r.br, int64(n))
	r.off += m
	if errors.Is(err, io.EOF) {
		return nil, r.bad("truncated")
	}
	return buf.Bytes(), err
}

// readHead reads and parses the head. It checks the format only: nothing
// in it is believed yet.
func (r *reader) readHead() (*head, error) {
	var m [len(magic)]byte
	if err := r.full(m[:]); err != nil {
		return nil, fmt.Errorf("%w: not a trove bundle (too short)", ErrBadBundle)
	}
	if string(m[:]) != magic {
		return nil, fmt.Errorf("%w: not a trove bundle (wrong magic bytes)", ErrBadBundle)
	}
	v, err := r.u64()
	if err != nil {
		return nil, err
	}
	if v != formatVersion && v != 1 {
		return nil, r.bad("format version %d; this trove reads versions 1 and %d (upgrade trove)", v, formatVersion)
	}
	dir, err := r.blob(maxStoreDir, "store dir")
	if err != nil {
		return nil, err
	}
	h := &head{storeDir: string(dir), index: map[nix.PathHash]int{}}
	n, err := r.u64()
	if err != nil {
		return nil, err
	}
	if n > maxManifests {
		return nil, r.bad("%d manifests, at most %d", n, maxManifests)
	}
	for range n {
		b, err := r.blob(manifest.MaxManifestSize, "manifest")
		if err != nil {
			return nil, err
		}
		h.manifests = append(h.manifests, b)
	}
	if n, err = r.u64(); err != nil {
		return nil, err
	}
	if n > maxInfos {
		return nil, r.bad("%d path infos, at most %d", n, maxInfos)
	}
	for i := range int(n) {
		at := r.off
		b, err := r.blob(maxInfoSize, "path info")
		if err != nil {
			return nil, err
		}
		pi, err := decodeInfo(b, v)
		if err != nil {
			return nil, fmt.Errorf("%w at byte %d: path info %d: %v", ErrBadBundle, at, i, err)
		}
		if _, dup := h.index[pi.Path.Hash]; dup {
			return nil, fmt.Errorf("%w at byte %d: %s is listed twice", ErrBadBundle, at, pi.Path)
		}
		h.index[pi.Path.Hash] = i
		h.infos = append(h.infos, pi)
	}
	// References come first: a reference inside the bundle must be
	// earlier (under the same name); one outside it must be valid where
	// the bundle is imported, which Import checks.
	for i, pi := range h.infos {
		for _, ref := range pi.References {
			j, ok := h.index[ref.Hash]
			if !ok || ref == pi.Path {
				continue
			}
			if h.infos[j].Path != ref {
				return nil, fmt.Errorf("%w: %s refers to %s, but the bundle holds %s", ErrBadBundle, pi.Path, ref, h.infos[j].Path)
			}
			if j > i {
				return nil, fmt.Errorf("%w: %s comes before its reference %s (references must come first)", ErrBadBundle, pi.Path, ref)
			}
		}
	}
	return h, nil
}

// narFrame reads the size that precedes the NAR of pi and returns a reader
// of exactly that NAR's bytes.
func (r *reader) narFrame(pi *nix.PathInfo) (*io.LimitedReader, error) {
	n, err := r.u64()
	if err != nil {
		return nil, err
	}
	if n != pi.NarSize {
		return nil, r.bad("the NAR of %s has %d bytes; its path info says %d", pi.Path, n, pi.NarSize)
	}
	return &io.LimitedReader{R: countingReader{r}, N: int64(n)}, nil
}

// countingReader keeps the reader's offset while a NAR streams through.
type countingReader struct{ r *reader }

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.br.Read(p)
	c.r.off += int64(n)
	return n, err
}

// skip passes over the rest of a NAR, seeking if the input allows.
func (r *reader) skip(lr *io.LimitedReader) error {
	n := lr.N
	lr.N = 0
	if sk, ok := r.src.(io.Seeker); ok && n > int64(r.br.Buffered()) {
		buffered := r.br.Buffered()
		r.br.Discard(buffered)
		if _, err := sk.Seek(n-int64(buffered), io.SeekCurrent); err == nil {
			r.br.Reset(r.src)
			r.off += n
			return nil
		}
		// Not seekable after all (a pipe): read through.
		r.off += int64(buffered)
		n -= int64(buffered)
	}
	m, err := r.br.Discard(int(min(n, int64(maxInt))))
	r.off += int64(m)
	for n -= int64(m); err == nil && n > 0; n -= int64(m) {
		m, err = r.br.Discard(int(min(n, int64(maxInt))))
		r.off += int64(m)
	}
	if errors.Is(err, io.EOF) {
		return r.bad("truncated")
	}
	return err
}

const maxInt = int(^uint(0) >> 1)

// end reads the trailer and requires the input to end there.
func (r *reader) end() error {
	var t [len(trailer)]byte
	if err := r.full(t[:]); err != nil {
		return err
	}
	if string(t[:]) != trailer {
		return r.bad("no trailer after the last NAR")
	}
	if _, err := r.br.ReadByte(); err == nil {
		return r.bad("bytes after the trailer")
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
