package strictcbor

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// ItemCost is what Limits.Decoded charges for each data item besides its
// payload: the header of a string or slice that holds it in Go (16 or 24
// bytes), rounded up.
const ItemCost = 24

// Limits bound one message type. Every field but Decoded must be set.
type Limits struct {
	// Wire caps the message's encoded bytes.
	Wire int
	// Items caps the data items of the message at every level, keys and
	// values of maps included.
	Items int
	// Array caps the elements of any one array.
	Array int
	// MapPairs caps the pairs of any one map (trove's structs have few
	// fields).
	MapPairs int
	// Nested caps the depth of arrays and maps.
	Nested int
	// Decoded caps the bytes the decoded value may hold: the payloads of
	// its strings and byte strings plus ItemCost per item. Zero means what
	// a message within Wire and Items can hold: Wire + Items*ItemCost.
	Decoded int
}

// encMode is Core Deterministic Encoding: every trove format is
// canonical, so a signature or a content address over an encoding is
// stable, and a decoder can require the canonical form.
var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// Marshal encodes v canonically (Core Deterministic Encoding). Every
// encoder of a trove format uses it.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// ErrLimit is wrapped by the error for a message over its Limits.
var ErrLimit = errors.New("over the decoding limits")

// Decoder decodes messages of one type under one set of Limits. It is
// safe for concurrent use.
type Decoder struct {
	lim  Limits
	mode cbor.DecMode
}

// NewDecoder checks l and returns its Decoder: the one way trove sets up
// a decoder of outside bytes, whatever the format.
func NewDecoder(l Limits) (*Decoder, error) {
	if l.Decoded == 0 {
		l.Decoded = l.Wire + l.Items*ItemCost
	}
	if l.Wire <= 0 || l.Items <= 0 || l.Array <= 0 || l.MapPairs <= 0 || l.Nested <= 0 || l.Decoded <= 0 {
		return nil, fmt.Errorf("strictcbor: every limit must be positive: %+v", l)
	}
	// fxamacker/cbor repeats the per-array, per-map and nesting limits
	// (within its own minimums); the walk has already enforced them.
	mode, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   max(l.Nested, 4),
		MaxArrayElements:  max(l.Array, 16),
		MaxMapPairs:       max(l.MapPairs, 16),
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		return nil, err
	}
	return &Decoder{lim: l, mode: mode}, nil
}

// MustDecoder is NewDecoder for package-level decoders, whose limits are
// constants: it panics on bad limits.
func MustDecoder(l Limits) *Decoder {
	d, err := NewDecoder(l)
	if err != nil {
		panic(err)
	}
	return d
}

// Unmarshal decodes b, which must hold exactly one message within the
// decoder's limits, into v.
func (d *Decoder) Unmarshal(b []byte, v any) error {
	if err := d.Check(b); err != nil {
		return err
	}
	return d.mode.Unmarshal(b, v)
}

// Check walks b without decoding it and reports whether it is one
// well-formed message within the limits.
func (d *Decoder) Check(b []byte) error {
	if len(b) > d.lim.Wire {
		return fmt.Errorf("%w: a message of %d bytes, at most %d", ErrLimit, len(b), d.lim.Wire)
	}
	w := walker{b: b, lim: &d.lim}
	if err := w.item(0); err != nil {
		return err
	}
	if w.pos != len(b) {
		return fmt.Errorf("cbor: %d bytes after the message", len(b)-w.pos)
	}
	return nil
}

type walker struct {
	b       []byte
	pos     int
	lim     *Limits
	items   int
	decoded int
}

var errTruncated = errors.New("cbor: message cut short")

// head reads an item's head: its major type and argument.
func (w *walker) head() (major byte, arg uint64, err error) {
	if w.pos >= len(w.b) {
		return 0, 0, errTruncated
	}
	ib := w.b[w.pos]
	w.pos++
	major, ai := ib>>5, ib&0x1f
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai <= 27:
		n := 1 << (ai - 24)
		if len(w.b)-w.pos < n {
			return 0, 0, errTruncated
		}
		for _, c := range w.b[w.pos : w.pos+n] {
			arg = arg<<8 | uint64(c)
		}
		w.pos += n
		return major, arg, nil
	case ai == 31:
		return 0, 0, errors.New("cbor: indefinite lengths are not allowed")
	}
	return 0, 0, fmt.Errorf("cbor: reserved additional information %d", ai)
}

func (w *walker) item(depth int) error {
	major, arg, err := w.head()
	if err != nil {
		return err
	}
	w.items++
	w.decoded += ItemCost
	if w.items > w.lim.Items {
		return fmt.Errorf("%w: more than %d data items", ErrLimit, w.lim.Items)
	}
	switch major {
	case 0, 1, 7: // integers, simple values and floats: the head is all
	case 2, 3: // byte and text strings
		if arg > uint64(len(w.b)-w.pos) {
			return errTruncated
		}
		w.pos += int(arg)
		w.decoded += int(arg)
	case 4, 5: // arrays and maps
		if depth >= w.lim.Nested {
			return fmt.Errorf("%w: nested deeper than %d", ErrLimit, w.lim.Nested)
		}
		n := arg
		if major == 4 && n > uint64(w.lim.Array) {
			return fmt.Errorf("%w: an array of %d elements, at most %d", ErrLimit, n, w.lim.Array)
		}
		if major == 5 {
			if n > uint64(w.lim.MapPairs) {
				return fmt.Errorf("%w: a map of %d pairs, at most %d", ErrLimit, n, w.lim.MapPairs)
			}
			n *= 2
		}
		for range n {
			if err := w.item(depth + 1); err != nil {
				return err
			}
		}
	case 6:
		return errors.New("cbor: tags are not allowed")
	}
	if w.decoded > w.lim.Decoded {
		return fmt.Errorf("%w: would decode to more than %d bytes", ErrLimit, w.lim.Decoded)
	}
	return nil
}

// Bytes is a byte string that decodes to a slice of the message it is in
// rather than a copy: for large payloads (a manifest inside an answer, a
// signed body inside a manifest), so that holding one costs its bytes
// once. The message's buffer must not be changed while a Bytes of it is
// in use.
type Bytes []byte

// UnmarshalCBOR keeps the byte string's payload in place. fxamacker/cbor
// hands it the item as a slice of the message being decoded.
func (b *Bytes) UnmarshalCBOR(data []byte) error {
	w := walker{b: data}
	major, n, err := w.head()
	if err != nil {
		return err
	}
	if major != 2 {
		return fmt.Errorf("cbor: a %s where a byte string belongs", majorNames[major])
	}
	if n != uint64(len(data)-w.pos) {
		return errTruncated
	}
	*b = data[w.pos:len(data):len(data)]
	return nil
}

var majorNames = [8]string{"unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple value"}
