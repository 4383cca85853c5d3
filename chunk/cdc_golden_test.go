package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// cdcGoldenInputs are fixed inputs, generated deterministically so they
// are the same on every machine: math/rand/v2's ChaCha8 and PCG are
// specified algorithms, so a seed fixes their output.
var cdcGoldenInputs = []struct {
	name string
	gen  func() []byte
}{
	// Incompressible bytes: boundaries wherever the gear hash says.
	{"random-4MiB", func() []byte {
		b := make([]byte, 4<<20)
		rand.NewChaCha8([32]byte([]byte("trove cdc golden input, random!!"))).Read(b)
		return b
	}},
	// Text-like bytes: source-code-ish lines over a small vocabulary,
	// with a 300 KiB run of zeros (cut at MaxSize) and the first 512 KiB
	// repeated at the end after a 1000-byte insert (a few chunks into the
	// copy, the boundaries and chunk IDs repeat the earlier ones: that is
	// what deduplicates a shifted file).
	{"text-zeros-repeat", func() []byte {
		words := strings.Fields("func return if err != nil { } ( ) := for range store path chunk " +
			"index peer sync the a of to fetch narHash 0 1 64 // package import type struct")
		r := rand.New(rand.NewPCG(12, 34))
		var b bytes.Buffer
		for b.Len() < 1<<20 {
			for range 1 + r.IntN(12) {
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString(strings.Repeat("\t", r.IntN(4)))
			b.WriteByte('\n')
		}
		b.Write(make([]byte, 300<<10))
		head := bytes.Clone(b.Bytes()[:512<<10])
		for range 1000 {
			b.WriteByte(byte(r.Uint32()))
		}
		b.Write(head)
		return b.Bytes()
	}},
	// Shorter than MinSize: one chunk.
	{"short", func() []byte { return []byte("a NAR shorter than the minimum chunk size is one chunk\n") }},
}

// TestFastCDCGolden pins the chunker's output for fixed inputs: every
// boundary, every chunk ID and the chunk index ID. Any change to the gear
// table, the masks, the normalisation or the sizes changes them, and so
// changes every chunk ID peers exchange: that is a protocol change, not a
// refactoring. If it is meant, rerun with -update and say so in the commit.
func TestFastCDCGolden(t *testing.T) {
	for _, in := range cdcGoldenInputs {
		t.Run(in.name, func(t *testing.T) {
			data := in.gen()
			ix, err := IndexNAR(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			sum := sha256.Sum256(data)
			fmt.Fprintf(&got, "# FastCDC of %q: %d bytes, sha256 %s\n", in.name, len(data), hex.EncodeToString(sum[:]))
			fmt.Fprintf(&got, "# offset length chunk-id\n")
			fmt.Fprintf(&got, "index %s\n", ix.ID())
			offs := ix.Offsets()
			for i, c := range ix {
				fmt.Fprintf(&got, "%d %d %s\n", offs[i], c.Size, c.ID)
			}
			golden := filepath.Join("testdata", "cdc-"+in.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got.String() != string(want) {
				gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
				for i := range max(len(gl), len(wl)) {
					g, w := line(gl, i), line(wl, i)
					if g != w {
						t.Fatalf("%s differs at line %d:\n got %s\nwant %s\n"+
							"(the first line differing means the input changed, not the chunker; "+
							"any other means chunk boundaries or IDs changed, which every peer would notice)",
							golden, i+1, g, w)
					}
				}
			}
		})
	}
}

func line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}
