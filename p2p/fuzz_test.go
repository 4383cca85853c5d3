package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/strictcbor"
)

// Fuzz targets for every decoder of bytes from a peer. The property is the
// same for each: no panic; a rejected message wraps ErrProtocol; an
// accepted one re-encodes to a fixed point (encode, decode, encode gives
// the same bytes), so what the decoder accepts is something the encoder
// can say. Seeds are the f.Add calls below plus testdata/fuzz/<Name>/,
// made from a real store by `go test -run TestFuzzCorpus -update-corpus`.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

// fixedPoint checks that an accepted message re-encodes consistently.
func fixedPoint[T any](t *testing.T, v *T) {
	t.Helper()
	b1, err := strictcbor.Marshal(v)
	if err != nil {
		t.Fatalf("an accepted %T does not encode: %v", v, err)
	}
	var w T
	if err := decodeMsg(b1, &w); err != nil {
		t.Fatalf("an accepted %T, re-encoded, is rejected: %v\n%x", v, err, b1)
	}
	b2, err := strictcbor.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("%T does not re-encode to a fixed point:\n%x\n%x", v, b1, b2)
	}
}

// decodeAs decodes b as a T, checks the rejection or the fixed point, and
// returns the message if it was accepted.
func decodeAs[T any](t *testing.T, b []byte) *T {
	t.Helper()
	var v T
	if err := decodeMsg(b, &v); err != nil {
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("rejection does not wrap ErrProtocol: %v", err)
		}
		return nil
	}
	fixedPoint(t, &v)
	return &v
}

func mustEnc(v any) []byte {
	b, err := strictcbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Hand-written seeds: valid messages and near misses.
var (
	seedHash  = bytes.Repeat([]byte{0xab}, nix.HashLen)
	seedChunk = bytes.Repeat([]byte{0xcd}, 32)
	seedPath  = "0123456789abcdfghijklmnpqrsvwxyz-hello-2.12"
	seedIndex = chunk.Index{{ID: chunk.ID(seedChunk), Size: 1000}, {ID: chunk.ID{1}, Size: 24}}
	seedInfo  = WireInfo{
		Path: seedPath, NarHash: bytes.Repeat([]byte{1}, 32), NarSize: 1024,
		References: []string{seedPath, "00000000000000000000000000000000-glibc"},
		Deriver:    "11111111111111111111111111111111-hello.drv",
		Sigs:       []string{"cache.example.org-1:c2ln"}, CA: "", Index: seedIndex.Encode(),
	}
	seedsCommon = [][]byte{
		nil, {0xa0}, {0xf6}, {0xff}, {0x80}, {0xa1, 0x01, 0xf6},
		{0xa1, 0x01, 0x9f, 0xff}, {0xa2, 0x01, 0x80, 0x01, 0x80},
		{0xa1, 0x09, 0x00}, {0xa1, 0x01, 0x9a, 0x00, 0x0f, 0x42, 0x40},
		{0xa1, 0x01, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
)

func addSeeds(f *testing.F, seeds ...[]byte) {
	for _, s := range append(seeds, seedsCommon...) {
		f.Add(s)
	}
}

func FuzzDecodeHaveRequest(f *testing.F) {
	addSeeds(f,
		mustEnc(&HaveRequest{Hashes: [][]byte{seedHash}}),
		mustEnc(&HaveRequest{Hashes: [][]byte{seedHash[:19]}}),
		cat(haveArrayHeader(MaxHaveHashes+1), []byte{0x54}, seedHash),
		mustEnc(&HaveRequest{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := decodeAs[HaveRequest](t, b)
		if req == nil {
			return
		}
		hs, err := pathHashes(req.Hashes, MaxHaveHashes)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatal(err)
			}
			return
		}
		for i, h := range hs {
			if !bytes.Equal(h[:], req.Hashes[i]) {
				t.Fatalf("hash %d changed", i)
			}
		}
	})
}

func FuzzDecodeHavesRequest(f *testing.F) {
	addSeeds(f,
		mustEnc(&HavesRequest{Paths: [][]byte{seedHash}}),
		mustEnc(&HavesRequest{Paths: [][]byte{seedHash[:19]}}),
		cat(haveArrayHeader(MaxHaveHashes+1), []byte{0x54}, seedHash),
		mustEnc(&HavesRequest{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := decodeAs[HavesRequest](t, b)
		if req == nil {
			return
		}
		if _, err := pathHashes(req.Paths, MaxHaveHashes); err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatal(err)
		}
	})
}

func FuzzDecodeHaves(f *testing.F) {
	addSeeds(f,
		mustEnc(&Haves{Entries: []HaveEntry{{Path: 0, All: true}, {Path: 3, Bits: []byte{0xff, 0x01}}, {Path: 9, Add: []uint32{1, 5, 1 << 20}}}}),
		mustEnc(&Haves{Entries: []HaveEntry{{Path: 1, Add: make([]uint32, MaxHaveAdds+1)}}}),
		mustEnc(&Haves{Entries: make([]HaveEntry, MaxHaveEntries+1)}),
		mustEnc(&Haves{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := decodeAs[Haves](t, b)
		if m == nil {
			return
		}
		if err := checkHaves(m, MaxHaveHashes); err == nil && len(m.Entries) > MaxHaveEntries {
			t.Fatalf("%d entries accepted, cap %d", len(m.Entries), MaxHaveEntries)
		}
	})
}

func FuzzDecodeHaveResponse(f *testing.F) {
	addSeeds(f, mustEnc(&HaveResponse{Bitmap: []byte{0x05}}), mustEnc(&HaveResponse{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAs[HaveResponse](t, b)
	})
}

func FuzzDecodeInfoRequest(f *testing.F) {
	addSeeds(f,
		mustEnc(&InfoRequest{Hashes: [][]byte{seedHash, seedHash}}),
		mustEnc(&InfoRequest{Hashes: hashes(3), Closure: true}),
		cat(haveArrayHeader(MaxInfoHashes+1), []byte{0x54}, seedHash))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := decodeAs[InfoRequest](t, b)
		if req == nil {
			return
		}
		if _, err := pathHashes(req.Hashes, MaxInfoHashes); err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatal(err)
		}
	})
}

// checkFromWire: FromWire rejects with ErrProtocol, or accepts exactly what
// ToWire would send for the result (the wire form is canonical).
func checkFromWire(t *testing.T, w *WireInfo) {
	t.Helper()
	pi, ix, err := FromWire(w)
	if err != nil {
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("FromWire rejection does not wrap ErrProtocol: %v", err)
		}
		return
	}
	if ix.NarSize() != pi.NarSize || ix.ID() != pi.ChunkIndex || pi.NarSize == 0 {
		t.Fatalf("FromWire accepted an inconsistent info: %+v", pi)
	}
	if got, want := mustEnc(ToWire(pi, ix)), mustEnc(w); !bytes.Equal(got, want) {
		t.Fatalf("FromWire accepted a non-canonical info:\nsent    %x\nmeaning %x", want, got)
	}
}

func FuzzDecodeInfoResponse(f *testing.F) {
	bad := seedInfo
	bad.NarSize = 1023
	addSeeds(f,
		mustEnc(&InfoResponse{Infos: []*WireInfo{&seedInfo, nil}}),
		mustEnc(&InfoResponse{Infos: []*WireInfo{&bad}}),
		mustEnc(&InfoResponse{Infos: []*WireInfo{{}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := decodeAs[InfoResponse](t, b)
		if resp == nil {
			return
		}
		for _, w := range resp.Infos {
			if w != nil {
				checkFromWire(t, w)
			}
		}
	})
}

func FuzzDecodeWireInfo(f *testing.F) {
	noIndex := seedInfo
	noIndex.Index = nil
	addSeeds(f, mustEnc(&seedInfo), mustEnc(&noIndex))
	f.Fuzz(func(t *testing.T, b []byte) {
		if w := decodeAs[WireInfo](t, b); w != nil {
			checkFromWire(t, w)
		}
	})
}

// fuzzContent serves one path of narSize bytes and any chunk, and fails
// the test if the server asks it for something outside the NAR.
type fuzzContent struct {
	t       *testing.T
	narSize uint64
}

func (c fuzzContent) PathInfo(h nix.PathHash) (*nix.PathInfo, error) {
	if h[0] == 0 {
		return nil, nix.ErrNotValid
	}
	return &nix.PathInfo{Path: nix.Path{Hash: h, Name: "x"}, NarSize: c.narSize}, nil
}

func (c fuzzContent) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	return infosOf(c.PathInfo, roots)
}

// infosOf is the closure of roots that refer to nothing: their PathInfos.
func infosOf(info func(nix.PathHash) (*nix.PathInfo, error), roots []nix.Path) ([]*nix.PathInfo, error) {
	var out []*nix.PathInfo
	for _, r := range roots {
		pi, err := info(r.Hash)
		if err != nil {
			return nil, err
		}
		out = append(out, pi)
	}
	return out, nil
}

func (c fuzzContent) ChunkIndexOf(nix.PathHash) (chunk.Index, error) {
	return nil, nix.ErrNotValid
}

func (c fuzzContent) ReadChunk(_ context.Context, id chunk.ID, size uint32) ([]byte, error) {
	if size == 0 || size > chunk.MaxSize {
		c.t.Fatalf("the server asked for a chunk of %d bytes", size)
	}
	if id[0] == 0 {
		return nil, nix.ErrNotValid
	}
	return make([]byte, size), nil
}

func (c fuzzContent) WriteNAR(_ context.Context, w io.Writer, _ nix.Path, off, n int64) error {
	if off < 0 || n <= 0 || n > MaxRangeLen || uint64(off)+uint64(n) > c.narSize {
		c.t.Fatalf("the server asked for NAR bytes %d+%d of %d", off, n, c.narSize)
	}
	_, err := w.Write(make([]byte, n))
	return err
}

func FuzzDecodeChunkRequest(f *testing.F) {
	addSeeds(f,
		mustEnc(&ChunkRequest{Seq: 7, Chunk: seedChunk, Size: 1000}),
		mustEnc(&ChunkRequest{Seq: 8, Path: seedHash, Offset: 100, Length: 200}),
		mustEnc(&ChunkRequest{Path: seedHash, Offset: 1<<64 - 1, Length: 2}),
		mustEnc(&ChunkRequest{Path: seedHash, Offset: 1 << 63, Length: 2}),
		mustEnc(&ChunkRequest{Chunk: seedChunk, Size: 1000, Path: seedHash, Length: 1}),
		mustEnc(&ChunkRequest{Chunk: seedChunk[:31], Size: 1000}))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := decodeAs[ChunkRequest](t, b)
		if req == nil {
			return
		}
		// The server's checks on a decoded request: no panic, a violation
		// wraps ErrProtocol, and the content is never asked for anything
		// out of range (fuzzContent fails the test if it is).
		s := &server{content: fuzzContent{t: t, narSize: 5000}, node: &Node{}}
		var buf bytes.Buffer
		data, later, serr, err := s.chunkData(context.Background(), "", &slot{s: &s.node.slots}, req, &buf)
		if later.after != 0 {
			t.Fatalf("the first request for a chunk is told to come back later")
		}
		switch {
		case err != nil:
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("a request refusal does not wrap ErrProtocol: %v", err)
			}
		case serr == nil:
			want := req.Size
			if len(req.Path) > 0 {
				want = req.Length
			}
			if uint32(len(data)) != want {
				t.Fatalf("served %d bytes for %+v", len(data), req)
			}
		}
	})
}

func FuzzDecodeChunkHeader(f *testing.F) {
	addSeeds(f,
		mustEnc(&ChunkHeader{Seq: 1, Length: 65536}),
		mustEnc(&ChunkHeader{Seq: 2, Err: "path is not valid in the store"}),
		mustEnc(&ChunkHeader{Seq: 3, Length: 1, Err: "both"}),
		mustEnc(&ChunkHeader{Seq: 4, Later: 500, To: []byte("12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")}),
		mustEnc(&ChunkHeader{Seq: 5, Later: 20, Busy: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAs[ChunkHeader](t, b)
	})
}

func FuzzDecodeManifestRequest(f *testing.F) {
	addSeeds(f,
		mustEnc(&ManifestRequest{Name: "laptop"}),
		mustEnc(&ManifestRequest{Name: "laptop", Generation: 7}),
		mustEnc(&ManifestRequest{Name: strings.Repeat("n", 300), Generation: 1<<64 - 1}),
		mustEnc(&ManifestRequest{Name: "../x\x00"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAs[ManifestRequest](t, b)
	})
}

func FuzzDecodeManifestResponse(f *testing.F) {
	addSeeds(f,
		mustEnc(&ManifestResponse{Manifest: []byte{0xa2, 0x01, 0x40, 0x02, 0x60}}),
		mustEnc(&ManifestResponse{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAs[ManifestResponse](t, b)
	})
}

// FuzzDecodeAnnouncement fuzzes what a follower does with a gossiped
// message: an announcement it accepts is for the topic's name, carries a
// 32-byte manifest ID and re-encodes to a fixed point.
func FuzzDecodeAnnouncement(f *testing.F) {
	id := bytes.Repeat([]byte{0xee}, 32)
	addSeeds(f,
		mustEnc(&Announcement{Name: "laptop", Generation: 3, ID: id}),
		mustEnc(&Announcement{Name: "desktop", Generation: 3, ID: id}),
		mustEnc(&Announcement{Name: "laptop", Generation: 0, ID: id[:31]}),
		mustEnc(&Announcement{Name: strings.Repeat("l", maxAnnouncement), Generation: 1, ID: id}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAnnouncement(b, "laptop")
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("rejection does not wrap ErrProtocol: %v", err)
			}
			return
		}
		if a.Name != "laptop" || len(a.ID) != 32 {
			t.Fatalf("accepted %+v", a)
		}
		fixedPoint(t, &a)
	})
}

// FuzzReadMsg fuzzes the framing: a stream of length-prefixed messages read
// with readMsg until it ends. Every read either returns a message, whose
// frame was at most the cap and which re-frames to the same message, or
// io.EOF at a clean end of the stream, or an error wrapping ErrProtocol.
func FuzzReadMsg(f *testing.F) {
	two := append(msg(&ChunkRequest{Seq: 1, Chunk: seedChunk, Size: 9}), msg(&ChunkRequest{Seq: 2, Path: seedHash, Length: 9})...)
	for _, s := range [][]byte{
		nil, two, two[:len(two)-1], {0x00}, {0x80}, {0x80, 0x00},
		binary.AppendUvarint(nil, maxChunkHeader+1), bytes.Repeat([]byte{0xff}, 11),
		append(binary.AppendUvarint(nil, maxChunkHeader), make([]byte, maxChunkHeader)...),
		frame([]byte{0xa1, 0x01, 0x01, 0x00}),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cr := &countingReader{r: bytes.NewReader(b)}
		r := bufio.NewReaderSize(cr, 16)
		consumed := 0
		for range 64 {
			var m ChunkRequest
			err := readMsg(r, maxChunkHeader, &m)
			if errors.Is(err, io.EOF) {
				if consumed != len(b) {
					t.Fatalf("io.EOF after %d of %d bytes", consumed, len(b))
				}
				return
			}
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("a framing error does not wrap ErrProtocol: %v", err)
				}
				return
			}
			n, k := binary.Uvarint(b[consumed:])
			if k <= 0 || n > maxChunkHeader {
				t.Fatalf("accepted a frame of length %d (varint %d bytes) over the cap", n, k)
			}
			consumed += k + int(n)
			if cr.n-r.Buffered() != consumed {
				t.Fatalf("read %d bytes for frames of %d", cr.n-r.Buffered(), consumed)
			}
			var buf bytes.Buffer
			if err := writeMsg(&buf, &m); err != nil {
				t.Fatal(err)
			}
			var m2 ChunkRequest
			if err := readMsg(bufio.NewReader(&buf), maxChunkHeader, &m2); err != nil {
				t.Fatalf("a re-framed message is rejected: %v", err)
			}
			if !bytes.Equal(mustEnc(&m), mustEnc(&m2)) {
				t.Fatalf("re-framing changed %+v into %+v", m, m2)
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestFuzzCorpus writes seed corpora made from a real store (real chunk
// indexes and path infos) into testdata/fuzz when run with -update-corpus,
// and otherwise checks that every fuzz target has a seed corpus.
func TestFuzzCorpus(t *testing.T) {
	targets := []string{
		"FuzzDecodeHaveRequest", "FuzzDecodeHaveResponse", "FuzzDecodeInfoRequest",
		"FuzzDecodeInfoResponse", "FuzzDecodeWireInfo", "FuzzDecodeChunkRequest",
		"FuzzDecodeChunkHeader", "FuzzReadMsg", "FuzzDecodeHavesRequest", "FuzzDecodeHaves",
	}
	if !*updateCorpus {
		for _, name := range targets {
			ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", name))
			if err != nil || len(ents) == 0 {
				t.Errorf("%s has no seed corpus (%v); run go test -run TestFuzzCorpus -update-corpus ./p2p/", name, err)
			}
		}
		return
	}
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := addTree(t, s, map[string][]byte{"data": randomBytes(600<<10, 3), "bin/x": []byte("#!/bin/sh\n")})
	small := addTree(t, s, map[string][]byte{"f": []byte("hello")})
	var infos []*WireInfo
	for _, pi := range []*nix.PathInfo{big, small} {
		ix, err := s.ChunkIndexOf(pi.Path.Hash)
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, ToWire(pi, ix))
	}
	infos[1].References = []string{infos[0].Path, infos[1].Path}
	infos[1].Sigs = []string{"trove-1:" + string(bytes.Repeat([]byte("A"), 86)) + "=="}
	ix, _ := s.ChunkIndexOf(big.Path.Hash)
	h0, h1 := big.Path.Hash, small.Path.Hash
	corpus := map[string][][]byte{
		"FuzzDecodeHaveRequest": {
			mustEnc(&HaveRequest{Hashes: [][]byte{h0[:], h1[:], make([]byte, 20)}}),
			mustEnc(&HaveRequest{Hashes: hashes(9)}),
		},
		"FuzzDecodeHaveResponse": {mustEnc(&HaveResponse{Bitmap: []byte{0xff, 0x01}})},
		"FuzzDecodeHavesRequest": {mustEnc(&HavesRequest{Paths: [][]byte{h0[:], h1[:]}})},
		"FuzzDecodeHaves": {
			mustEnc(&Haves{Entries: []HaveEntry{{Path: 0, All: true}, {Path: 1, Bits: []byte{0b1011}}}}),
			mustEnc(&Haves{Entries: []HaveEntry{{Path: 1, Add: []uint32{uint32(len(ix) - 1), 0}}}}),
		},
		"FuzzDecodeInfoRequest": {mustEnc(&InfoRequest{Hashes: [][]byte{h0[:], h1[:]}}), mustEnc(&InfoRequest{Hashes: [][]byte{h0[:]}, Closure: true})},
		"FuzzDecodeInfoResponse": {
			mustEnc(&InfoResponse{Infos: infos}),
			mustEnc(&InfoResponse{Infos: []*WireInfo{nil, infos[1], nil}}),
			mustEnc(&InfoResponse{Infos: infos[1:], Truncated: true}),
		},
		"FuzzDecodeWireInfo": {mustEnc(infos[0]), mustEnc(infos[1])},
		"FuzzDecodeChunkRequest": {
			mustEnc(&ChunkRequest{Seq: 3, Chunk: ix[1].ID[:], Size: ix[1].Size}),
			mustEnc(&ChunkRequest{Seq: 4, Path: h0[:], Offset: 4999, Length: 1}),
			mustEnc(&ChunkRequest{Seq: 5, Path: h0[:], Length: MaxRangeLen}),
		},
		"FuzzDecodeChunkHeader": {
			mustEnc(&ChunkHeader{Seq: 1 << 40, Length: chunk.MaxSize}),
			mustEnc(&ChunkHeader{Seq: 9, Err: "chunk " + ix[0].ID.String() + ": path is not valid in the store"}),
		},
	}
	var stream []byte
	for i, c := range ix {
		stream = append(stream, msg(&ChunkRequest{Seq: uint64(i), Chunk: c.ID[:], Size: c.Size})...)
	}
	corpus["FuzzReadMsg"] = [][]byte{stream, stream[:len(stream)/2]}
	for name, seeds := range corpus {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("store-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
