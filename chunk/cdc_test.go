package chunk

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func chunksOf(t testing.TB, data []byte) [][]byte {
	var out [][]byte
	if err := chunkStream(bytes.NewReader(data), func(c []byte) error {
		out = append(out, bytes.Clone(c))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCDC(t *testing.T) {
	// Where the cuts fall is pinned by TestFastCDCGolden; these are the
	// properties any content-defined chunker must have.
	data := randomBytes(11, 8<<20)
	chunks := chunksOf(t, data)
	if !bytes.Equal(bytes.Join(chunks, nil), data) {
		t.Fatal("chunks do not concatenate to the input")
	}
	for i, c := range chunks {
		if len(c) > MaxSize || (i < len(chunks)-1 && len(c) < MinSize) {
			t.Fatalf("chunk %d has %d bytes", i, len(c))
		}
	}
	avg := len(data) / len(chunks)
	if avg < AvgSize/2 || avg > AvgSize*2 {
		t.Fatalf("average chunk %d bytes, want about %d", avg, AvgSize)
	}
	// Content-defined: an insertion changes only the chunks around it.
	edited := append(append(bytes.Clone(data[:4<<20]), 'x'), data[4<<20:]...)
	old := map[string]bool{}
	for _, c := range chunks {
		old[string(c)] = true
	}
	changed := 0
	for _, c := range chunksOf(t, edited) {
		if !old[string(c)] {
			changed++
		}
	}
	if changed > 3 {
		t.Fatalf("a one-byte insertion changed %d chunks", changed)
	}
	// Short reads from the source change nothing.
	var short [][]byte
	chunkStream(&oneByteThenRest{r: bytes.NewReader(data)}, func(c []byte) error { short = append(short, bytes.Clone(c)); return nil })
	if len(short) != len(chunks) {
		t.Fatalf("short reads gave %d chunks, want %d", len(short), len(chunks))
	}
}

type oneByteThenRest struct {
	r    *bytes.Reader
	flip bool
}

func (o *oneByteThenRest) Read(p []byte) (int, error) {
	o.flip = !o.flip
	if o.flip && len(p) > 1 {
		p = p[:1+rand.IntN(len(p)/2+1)]
	}
	return o.r.Read(p)
}

func BenchmarkCDC(b *testing.B) {
	data := randomBytes(3, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for off := 0; off < len(data); off += cutPoint(data[off:]) {
		}
	}
}

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}
