package strictcbor

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

type msg struct {
	Name string   `cbor:"1,keyasint"`
	Refs []string `cbor:"2,keyasint,omitempty"`
	Sub  *msg     `cbor:"3,keyasint,omitempty"`
}

func enc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// arrayOfEmpty is {2: [N empty strings]}: N+3 bytes that would decode to
// N 16-byte string headers.
func arrayOfEmpty(n int) []byte {
	b := []byte{0xa1, 0x02, 0x9a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(b, bytes.Repeat([]byte{0x60}, n)...)
}

func TestLimits(t *testing.T) {
	lim := Limits{Wire: 1 << 20, Items: 100, Array: 10, MapPairs: 4, Nested: 3, Decoded: 1000}
	d := MustDecoder(lim)
	for _, tc := range []struct {
		name  string
		b     []byte
		limit bool // refused as over the limits (else: decodes, or malformed)
		ok    bool
	}{
		{"small", enc(t, msg{Name: "a", Refs: []string{"x", "y"}}), false, true},
		{"array at the cap", arrayOfEmpty(10), false, true},
		{"array over the cap", arrayOfEmpty(11), true, false},
		{"nested within the limits", enc(t, msg{Refs: make([]string, 10), Sub: &msg{Refs: make([]string, 10), Sub: &msg{}}}), false, true},
		{"too deep", enc(t, msg{Sub: &msg{Sub: &msg{Sub: &msg{}}}}), true, false},
		{"too many decoded bytes", enc(t, msg{Name: string(make([]byte, 1000))}), true, false},
		{"a million empty strings", arrayOfEmpty(1 << 20), true, false},
		{"truncated", arrayOfEmpty(5)[:8], false, false},
		{"trailing bytes", append(enc(t, msg{Name: "a"}), 0), false, false},
		{"indefinite length", []byte{0xa1, 0x01, 0x7f, 0x61, 0x61, 0xff}, false, false},
		{"tag", []byte{0xa1, 0x01, 0xc0, 0x61, 0x61}, false, false},
		{"unknown field", []byte{0xa1, 0x09, 0x01}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m msg
			err := d.Unmarshal(tc.b, &m)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok = %v", err, tc.ok)
			}
			if errors.Is(err, ErrLimit) != tc.limit {
				t.Fatalf("err = %v, want over the limits = %v", err, tc.limit)
			}
		})
	}
	// Items: a message of 101 items (a map, its key, an array of 98).
	b := arrayOfEmpty(98)
	if err := MustDecoder(Limits{Wire: 1 << 30, Items: 100, Array: 1000, MapPairs: 4, Nested: 3, Decoded: 1 << 20}).Check(b); !errors.Is(err, ErrLimit) {
		t.Fatalf("101 items under a cap of 100: %v", err)
	}
}

// TestCheckAllocatesNothing: the walk that refuses a bomb costs nothing
// however large the bomb.
func TestCheckAllocatesNothing(t *testing.T) {
	d := MustDecoder(Limits{Wire: 1 << 40, Items: 1 << 30, Array: 1 << 30, MapPairs: 4, Nested: 3, Decoded: 1 << 40})
	b := arrayOfEmpty(1 << 16)
	if n := testing.AllocsPerRun(10, func() {
		if err := d.Check(b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func FuzzCheck(f *testing.F) {
	f.Add(arrayOfEmpty(3))
	f.Add([]byte{0xa1, 0x01, 0x61, 0x61})
	d := MustDecoder(Limits{Wire: 1 << 20, Items: 64, Array: 16, MapPairs: 4, Nested: 3, Decoded: 1 << 10})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m msg
		if err := d.Unmarshal(b, &m); err != nil {
			return
		}
		// What the walk lets through, fxamacker/cbor decodes within the limits.
		if len(m.Refs) > 16 {
			t.Fatalf("%d refs", len(m.Refs))
		}
	})
}

func TestBytesAliasTheMessage(t *testing.T) {
	type env struct {
		Body Bytes  `cbor:"1,keyasint"`
		Sig  string `cbor:"2,keyasint"`
	}
	b := enc(t, env{Body: Bytes("the body"), Sig: "s"})
	d := MustDecoder(Limits{Wire: 1 << 20, Items: 8, Array: 16, MapPairs: 4, Nested: 2, Decoded: 1 << 10})
	var e env
	if err := d.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if string(e.Body) != "the body" || e.Sig != "s" {
		t.Fatalf("decoded %+v", e)
	}
	if &e.Body[0] != &b[bytes.Index(b, []byte("the body"))] {
		t.Fatal("Body is a copy, not a slice of the message")
	}
	if err := d.Unmarshal(enc(t, map[int]any{1: "text", 2: "s"}), &e); err == nil {
		t.Fatal("a text string decoded as Bytes")
	}
}
