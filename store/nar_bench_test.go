package store

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

// BenchmarkNARHash measures computing a narHash from a tree on disk (page
// cache warm) against sha256 over as many bytes in memory, which bounds any
// narHash computation. ratio-to-sha256 is DumpNAR's time over the baseline's;
// 1.0 would mean framing and file reads cost nothing.
//
// The tree is benchTree's, shared with BenchmarkAdd and cached by it; its
// size is TROVE_BENCH_BYTES bytes, 256 MiB by default:
//
//	go test -run='^$' -bench=NARHash ./store/
//	TROVE_BENCH_BYTES=1073741824 go test -run='^$' -bench=NARHash ./store/
func BenchmarkNARHash(b *testing.B) {
	tree := benchTree(b, benchBytes())
	narSize, err := nix.DumpNAR(io.Discard, tree) // also warms the page cache
	if err != nil {
		b.Fatal(err)
	}
	var baseline float64 // ns per op of the sha256 baseline
	b.Run("sha256-memory", func(b *testing.B) {
		buf := make([]byte, 4<<20)
		_, _ = rand.NewChaCha8([32]byte{1}).Read(buf)
		b.SetBytes(narSize)
		for b.Loop() {
			h := sha256.New()
			for left := narSize; left > 0; {
				n := min(left, int64(len(buf)))
				h.Write(buf[:n])
				left -= n
			}
			h.Sum(nil)
		}
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("DumpNAR-sha256", func(b *testing.B) {
		b.SetBytes(narSize)
		for b.Loop() {
			h := sha256.New()
			n, err := nix.DumpNAR(h, tree)
			if err != nil || n != narSize {
				b.Fatalf("DumpNAR = %d, %v; want %d bytes", n, err, narSize)
			}
			h.Sum(nil)
		}
		if baseline > 0 {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/baseline, "ratio-to-sha256")
		}
	})
}
