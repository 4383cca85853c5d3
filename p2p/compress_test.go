package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/trove-p2p/trove/chunk"
)

// TestCompressedChunks: over real nodes, a chunk asked for compressed
// travels as a zstd frame when it shrinks, as it is when it does not, and
// arrives verified either way.
func TestCompressedChunks(t *testing.T) {
	a, b, sa := connectedPair(t)
	text := bytes.Repeat([]byte("the same line of a config file, again and again\n"), 1000)
	noise := make([]byte, 40<<10)
	rand.Read(noise)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name       string
		data       []byte
		compressed bool
	}{
		{"text", text, true},
		{"random bytes", noise, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi := addTree(t, sa, map[string][]byte{"f": tc.data})
			ix, err := sa.ChunkIndexOf(pi.Path.Hash)
			if err != nil {
				t.Fatal(err)
			}
			c := ix[0]
			// On the wire: the header says whether the bytes are a frame.
			st, err := b.Host().NewStream(ctx, a.ID(), ProtoChunks)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := writeMsg(st, &ChunkRequest{Chunk: c.ID[:], Size: c.Size, Zstd: true}); err != nil {
				t.Fatal(err)
			}
			var h ChunkHeader
			if err := readMsg(bufio.NewReader(st), maxChunkHeader, &h); err != nil {
				t.Fatal(err)
			}
			if h.Zstd != tc.compressed || (h.Zstd && h.Length >= c.Size) || (!h.Zstd && h.Length != c.Size) {
				t.Errorf("header %+v for a %d-byte chunk, want compressed %v", h, c.Size, tc.compressed)
			}
			// Through the client: verified, whole.
			var got []byte
			err = b.Fetch(ctx, a.ID(), []ChunkWant{{Chunk: c.ID, Size: c.Size, Zstd: true}}, 1, func(_ int, data []byte, err error) error {
				got = append(got, data...)
				return err
			})
			if err != nil || chunk.Sum(got) != c.ID {
				t.Errorf("Fetch: %v (%d bytes)", err, len(got))
			}
		})
	}
}

// TestCompressedChunkRefused: a compressed answer that the request did
// not allow, that is no shorter than the chunk, that decodes to another
// size (a bomb among them) or that is not zstd, is bad data.
func TestCompressedChunkRefused(t *testing.T) {
	data := bytes.Repeat([]byte{'x'}, 1000)
	id := chunk.Sum(data)
	frame := func(b []byte) []byte { return zenc.EncodeAll(b, nil) }
	bomb := frame(make([]byte, 64<<20)) // 64 MiB of zeros, a few KiB on the wire
	for _, tc := range []struct {
		name   string
		want   ChunkWant
		hdr    ChunkHeader
		body   []byte
		detail string
	}{
		{"not asked for", ChunkWant{Chunk: id, Size: 1000}, ChunkHeader{Zstd: true}, frame(data), "where it may not be"},
		{"no shorter than the chunk", ChunkWant{Chunk: id, Size: 1000, Zstd: true}, ChunkHeader{Zstd: true}, make([]byte, 1000), "where it may not be"},
		{"decodes to less", ChunkWant{Chunk: id, Size: 1000, Zstd: true}, ChunkHeader{Zstd: true}, frame(data[:999]), "does not decode"},
		{"decodes to more", ChunkWant{Chunk: id, Size: 1000, Zstd: true}, ChunkHeader{Zstd: true}, frame(append(data, 'x')), "does not decode"},
		{"a bomb", ChunkWant{Chunk: id, Size: 64 << 10, Zstd: true}, ChunkHeader{Zstd: true}, bomb, "does not decode"},
		{"not zstd", ChunkWant{Chunk: id, Size: 1000, Zstd: true}, ChunkHeader{Zstd: true}, []byte("not a frame at all"), "does not decode"},
		{"decodes to other bytes", ChunkWant{Chunk: id, Size: 1000, Zstd: true}, ChunkHeader{Zstd: true}, frame(bytes.Repeat([]byte{'y'}, 1000)), "does not hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := connectedPair(t)
			hdr := tc.hdr
			hdr.Length = uint32(len(tc.body))
			answerChunk(a, hdr, tc.body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			alloc := allocDuring(func() {
				err = b.Fetch(ctx, a.ID(), []ChunkWant{tc.want}, 1, func(int, []byte, error) error { return nil })
			})
			var bad *BadDataError
			if !errors.As(err, &bad) || !bytes.Contains([]byte(bad.Detail), []byte(tc.detail)) {
				t.Fatalf("Fetch: %v, want bad data saying %q", err, tc.detail)
			}
			if alloc > 16<<20 {
				t.Errorf("refusing it allocated %d MiB", alloc>>20)
			}
		})
	}
}

// TestDecompressChunkBomb: a frame that declares more than the chunk is
// refused before anything is allocated for it; one that does not declare
// its size is cut off within one block of the chunk.
func TestDecompressChunkBomb(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithNoEntropyCompression(true))
	if err != nil {
		t.Fatal(err)
	}
	declared := enc.EncodeAll(make([]byte, 32<<20), nil)
	var undeclared bytes.Buffer // a stream frame has no content size
	w, _ := zstd.NewWriter(&undeclared)
	w.Write(make([]byte, 32<<20))
	w.Close()
	dst := make([]byte, 0, chunk.MaxSize+zstdBlock)
	for name, frame := range map[string][]byte{"declared": declared, "undeclared": undeclared.Bytes()} {
		var err error
		alloc := allocDuring(func() { _, err = decompressChunk(dst, frame, 1000) })
		if !errors.Is(err, errInflates) {
			t.Errorf("%s: %v, want errInflates", name, err)
		}
		if alloc > 4<<20 {
			t.Errorf("%s: refusing a 32 MiB claim allocated %d KiB", name, alloc>>10)
		}
	}
}

func FuzzDecompressChunk(f *testing.F) {
	f.Add(zenc.EncodeAll(bytes.Repeat([]byte("ab"), 500), nil), uint32(1000))
	f.Add(zenc.EncodeAll(make([]byte, 1<<20), nil), uint32(1000))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint32(10))
	dst := make([]byte, 0, chunk.MaxSize+zstdBlock)
	f.Fuzz(func(t *testing.T, frame []byte, size uint32) {
		out, err := decompressChunk(dst, frame, size)
		if err == nil && len(out) != int(size) {
			t.Fatalf("decoded %d bytes for a chunk of %d", len(out), size)
		}
		if err != nil && !errors.Is(err, errInflates) {
			t.Fatalf("error does not wrap errInflates: %v", err)
		}
	})
}

// TestShrinks: after missesToPause chunks in a row that did not shrink, a
// peer's chunks are not compressed for pauseChunks, then tried again; a
// chunk that shrinks resets the count; another peer is not affected.
func TestShrinks(t *testing.T) {
	var s shrinks
	const p, q = "p", "q"
	for range missesToPause - 1 {
		s.result(p, false)
	}
	s.result(p, true) // resets
	for range missesToPause - 1 {
		s.result(p, false)
	}
	if !s.try(p) {
		t.Fatalf("paused after %d misses that a shrink interrupted", missesToPause-1)
	}
	s.result(p, false)
	for i := range pauseChunks {
		if s.try(p) {
			t.Fatalf("tried chunk %d of the pause", i)
		}
	}
	if !s.try(p) || !s.try(q) {
		t.Errorf("not tried again after the pause, or another peer paused")
	}
	for range missesToPause {
		s.result(p, false)
	}
	s.forget(p)
	if !s.try(p) {
		t.Errorf("a forgotten peer is still paused")
	}
}
