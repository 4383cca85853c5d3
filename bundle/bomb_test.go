package bundle

import (
	"bytes"
	"runtime"
	"testing"
)

// TestInfoBombRefusedUnbuilt: a path info within maxInfoSize whose
// references or signatures would decode to many times its size (an empty
// string is 1 byte of CBOR and 16 in Go) is refused before it is built.
func TestInfoBombRefusedUnbuilt(t *testing.T) {
	empty := func(n int) []byte {
		return append([]byte{0x9a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0x60}, n)...)
	}
	const n = 100_000 // under the per-array cap fxamacker/cbor had here (131072)
	for name, b := range map[string][]byte{
		"100,000 empty references": append([]byte{0xa1, 0x04}, empty(n)...),
		"100,000 empty signatures": append([]byte{0xa1, 0x08}, empty(n)...),
	} {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, err := decodeInfo(b, formatVersion)
		runtime.ReadMemStats(&m1)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 64<<10 {
			t.Errorf("%s: refusing %d bytes allocated %d", name, len(b), alloc)
		}
	}
}
