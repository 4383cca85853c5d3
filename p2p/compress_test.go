package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/trove-p2p/trove/chunk"
)

// TestCompressedChunks: over real nodes, a stream whose first request
// asks for compression gets its answers as one zstd stream: a chunk of
// text crosses in a fraction of its size, random bytes at about theirs,
// and both arrive verified.
func TestCompressedChunks(t *testing.T) {
	a, b, sa := connectedPair(t)
	text := bytes.Repeat([]byte("the same line of a config file, again and again\n"), 1000)
	noise := make([]byte, 40<<10)
	rand.Read(noise)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		data    []byte
		maxWire func(size int) int
	}{
		{"text", text, func(size int) int { return size / 4 }},
		{"random bytes", noise, func(size int) int { return size + size/64 + 64 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi := addTree(t, sa, map[string][]byte{"f": tc.data})
			ix, err := sa.ChunkIndexOf(pi.Path.Hash)
			if err != nil {
				t.Fatal(err)
			}
			c := ix[0]
			// On the wire: one zstd stream holding the header and the chunk.
			st, err := b.Host().NewStream(ctx, a.ID(), ProtoChunks)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := writeMsg(st, &ChunkRequest{Chunk: c.ID[:], Size: c.Size, Zstd: true}); err != nil {
				t.Fatal(err)
			}
			st.CloseWrite()
			raw, err := io.ReadAll(st)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) > tc.maxWire(int(c.Size)) {
				t.Errorf("%d bytes on the wire for a %d-byte chunk", len(raw), c.Size)
			}
			d, _ := zstd.NewReader(bytes.NewReader(raw))
			defer d.Close()
			br := bufio.NewReader(d)
			var h ChunkHeader
			if err := readMsg(br, maxChunkHeader, &h); err != nil || h.Length != c.Size {
				t.Fatalf("header %+v (%v) for a %d-byte chunk", h, err, c.Size)
			}
			// Through the client: verified, whole, and what it took on the
			// wire counted against what it carried.
			wire0, raw0 := b.Compressed(a.ID())
			var got []byte
			err = b.Fetch(ctx, a.ID(), []ChunkWant{{Chunk: c.ID, Size: c.Size, Zstd: true}}, 1, func(_ int, data []byte, err error) error {
				got = append(got, data...)
				return err
			})
			if err != nil || chunk.Sum(got) != c.ID {
				t.Errorf("Fetch: %v (%d bytes)", err, len(got))
			}
			wire, carried := b.Compressed(a.ID())
			// (The stream read here may end at other flushes than the one
			// above: its size is bounded, not equal.)
			if carried-raw0 != int64(c.Size) || wire-wire0 <= 0 || wire-wire0 > int64(tc.maxWire(int(c.Size))) {
				t.Errorf("Compressed counted %d wire bytes for %d chunk bytes of a %d-byte chunk", wire-wire0, carried-raw0, c.Size)
			}
		})
	}
}

// answerRaw makes n answer every chunks stream with body, as it is.
func answerRaw(n *Node, body []byte) {
	n.Host().SetStreamHandler(ProtoChunks, func(st network.Stream) {
		defer st.Close()
		var req ChunkRequest
		if err := readMsg(bufio.NewReader(st), maxChunkHeader, &req); err != nil {
			return
		}
		st.Write(body)
	})
}

// zstdOf compresses b as one stream, with opts.
func zstdOf(b []byte, opts ...zstd.EOption) []byte {
	var out bytes.Buffer
	w, _ := zstd.NewWriter(&out, opts...)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// TestCompressedAnswersRefused: a compressed answer stream that is not
// zstd, asks for a window above zstdWindow, or decodes to more or other
// bytes than asked is bad data, one that ends early an error, and
// refusing one allocates nothing for what it would decode to (a bomb).
func TestCompressedAnswersRefused(t *testing.T) {
	data := bytes.Repeat([]byte{'x'}, 1000)
	id := chunk.Sum(data)
	answer := func(length int, body []byte) []byte {
		var b bytes.Buffer
		writeMsg(&b, &ChunkHeader{Length: uint32(length)})
		b.Write(body)
		return b.Bytes()
	}
	good := zstdOf(answer(1000, data))
	noise := make([]byte, 4<<20)
	rand.Read(noise)
	for _, tc := range []struct {
		name   string
		body   []byte
		detail string
	}{
		{"not zstd", answer(1000, data), "do not decode"},
		{"a window too big", zstdOf(append(answer(1000, data), noise...), zstd.WithWindowSize(8<<20)), "do not decode"},
		{"a bomb", zstdOf(answer(1000, make([]byte, 64<<20)), zstd.WithWindowSize(zstdWindow)), "does not hash"},
		{"other bytes", zstdOf(answer(1000, bytes.Repeat([]byte{'y'}, 1000))), "does not hash"},
		{"more than asked", zstdOf(answer(2000, bytes.Repeat([]byte{'x'}, 2000))), "asked for 1000"},
		{"cut short", good[:len(good)/2], "(any error)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := connectedPair(t)
			answerRaw(a, tc.body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			alloc := allocDuring(func() {
				err = b.Fetch(ctx, a.ID(), []ChunkWant{{Chunk: id, Size: 1000, Zstd: true}}, 1, func(int, []byte, error) error { return nil })
			})
			var bad *BadDataError
			switch {
			case tc.detail == "(any error)":
				if err == nil {
					t.Fatal("Fetch of a stream cut short: no error")
				}
			case !errors.As(err, &bad) || !bytes.Contains([]byte(bad.Detail), []byte(tc.detail)):
				t.Fatalf("Fetch: %v, want bad data saying %q", err, tc.detail)
			}
			if alloc > 16<<20 {
				t.Errorf("refusing it allocated %d MiB", alloc>>20)
			}
		})
	}
}

// FuzzCompressedAnswers: whatever a peer sends as a compressed answer
// stream, reading a header and its data through the decoder fails
// cleanly or yields at most what the header said, within the bounds.
func FuzzCompressedAnswers(f *testing.F) {
	var b bytes.Buffer
	writeMsg(&b, &ChunkHeader{Length: 100})
	b.Write(bytes.Repeat([]byte("ab"), 50))
	f.Add(zstdOf(b.Bytes()))
	f.Add(zstdOf(make([]byte, 1<<20)))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, stream []byte) {
		zs, err := decompressFrom(bytes.NewReader(stream), "peer")
		if err != nil {
			return
		}
		defer zs.release()
		r := bufio.NewReader(zs)
		var h ChunkHeader
		if err := readMsg(r, maxChunkHeader, &h); err != nil {
			return
		}
		if h.Length > chunk.MaxSize {
			return // refused by Fetch before reading
		}
		n, _ := io.ReadFull(r, make([]byte, h.Length))
		if n > int(h.Length) {
			t.Fatalf("read %d bytes for %d", n, h.Length)
		}
	})
}
