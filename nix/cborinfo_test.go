package nix

import (
	"bytes"
	"crypto/sha256"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/strictcbor"
)

// infoFormats are every trove format that carries PathInfos, with the
// fields each carries: FuzzCBORInfo decodes every input as each.
var infoFormats = []struct {
	name   string
	fields InfoFields
}{
	{"wire info answer", InfoWire},
	{"manifest body", InfoManifest},
	{"bundle", InfoBundle},
}

var decOneInfo = strictcbor.MustDecoder(InfoLimits(1 << 20))

func seedCBORInfo(t testing.TB) (*PathInfo, chunk.Index) {
	h := Hash(sha256.Sum256([]byte("hello")))
	p, err := MakePath(DefaultStoreDir, "output:out", h, "hello-2.12")
	if err != nil {
		t.Fatal(err)
	}
	glibc, err := MakePath(DefaultStoreDir, "output:out", Hash{7}, "glibc")
	if err != nil {
		t.Fatal(err)
	}
	drv, err := MakePath(DefaultStoreDir, "output:out", Hash{8}, "hello-2.12.drv")
	if err != nil {
		t.Fatal(err)
	}
	ix := chunk.Index{{ID: chunk.ID{1}, Size: 1000}, {ID: chunk.ID{2}, Size: 24}}
	return &PathInfo{Path: p, NarHash: h, NarSize: 1024, References: SortRefs([]Path{p, glibc}), Deriver: drv,
		Sigs: []string{"cache.example.org-1:c2ln"}, CA: "fixed:r:" + h.String(), ChunkIndex: ix.ID()}, ix
}

// FuzzCBORInfo decodes its input as a PathInfo of every format (wire info
// answers, manifest bodies, bundles all decode theirs through CBORInfo):
// what is accepted is well-formed, carries only its format's fields, and
// re-encodes to something that decodes to the same PathInfo. The container
// formats have their own fuzz targets too (p2p, manifest, bundle).
func FuzzCBORInfo(f *testing.F) {
	pi, ix := seedCBORInfo(f)
	for _, fm := range infoFormats {
		f.Add(mustMarshal(f, ToCBOR(pi, fm.fields, ix)))
	}
	bare := *pi
	bare.References, bare.Deriver, bare.Sigs, bare.CA = nil, Path{}, nil, ""
	f.Add(mustMarshal(f, ToCBOR(&bare, InfoManifest, nil)))
	// The layouts before CBORInfo: bundle format 1 and /trove/info/1.0.0
	// (signatures 6, CA 7, chunk index 8), which must not pass as current.
	f.Add(mustMarshal(f, map[int]any{1: pi.Path.String(), 2: pi.NarHash[:], 3: pi.NarSize, 6: pi.Sigs, 7: pi.CA}))
	f.Add(mustMarshal(f, map[int]any{1: pi.Path.String(), 2: pi.NarHash[:], 3: pi.NarSize, 6: pi.Sigs, 8: ix.Encode()}))
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x04, 0x9a, 0x00, 0x10, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c CBORInfo
		if err := decOneInfo.Unmarshal(b, &c); err != nil {
			return
		}
		for _, fm := range infoFormats {
			pi, ix, err := c.PathInfo(fm.fields)
			if err != nil {
				continue
			}
			checkDecoded(t, fm.name, fm.fields, &c, pi, ix)
		}
	})
}

func checkDecoded(t *testing.T, format string, f InfoFields, c *CBORInfo, pi *PathInfo, ix chunk.Index) {
	t.Helper()
	if pi.NarSize == 0 || pi.NarSize > MaxNarSize || len(pi.References) > MaxReferences || len(pi.Sigs) > MaxSigs {
		t.Fatalf("%s: accepted %+v", format, pi)
	}
	for i := 1; i < len(pi.References); i++ {
		if pi.References[i-1].Compare(pi.References[i]) >= 0 {
			t.Fatalf("%s: accepted unsorted references", format)
		}
	}
	if f&WithSigs == 0 && len(pi.Sigs) > 0 || f&WithIndex == 0 && ix != nil {
		t.Fatalf("%s: accepted a field the format does not carry", format)
	}
	if f&WithIndex != 0 && (ix.NarSize() != pi.NarSize || ix.ID() != pi.ChunkIndex) {
		t.Fatalf("%s: accepted a chunk index that does not cover the NAR", format)
	}
	again := mustMarshal(t, ToCBOR(pi, f, ix))
	var c2 CBORInfo
	if err := decOneInfo.Unmarshal(again, &c2); err != nil {
		t.Fatalf("%s: re-encoding does not decode: %v", format, err)
	}
	pi2, _, err := c2.PathInfo(f)
	if err != nil || !reflect.DeepEqual(pi, pi2) {
		t.Fatalf("%s: re-encoding changed the info: %v\n%+v\n%+v", format, err, pi, pi2)
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := strictcbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCBORInfoKeys pins the keys: manifests signed with them must keep
// their bytes, so a change here is a new format version everywhere.
func TestCBORInfoKeys(t *testing.T) {
	pi, ix := seedCBORInfo(t)
	c := ToCBOR(pi, InfoWire|InfoManifest, ix)
	var m map[int]cbor.RawMessage
	if err := cbor.Unmarshal(mustMarshal(t, c), &m); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[int]any{1: c.Path, 2: c.NarHash, 3: c.NarSize, 4: c.References, 5: c.Deriver, 6: c.CA, 7: c.IndexID, 8: c.Sigs, 9: c.Index} {
		if !bytes.Equal(m[key], mustMarshal(t, want)) {
			t.Errorf("key %d does not hold %v", key, want)
		}
	}
	if len(m) != 9 {
		t.Errorf("%d keys", len(m))
	}
}

func TestCBORInfoRefusesWhatItsFormatDoesNotCarry(t *testing.T) {
	pi, ix := seedCBORInfo(t)
	all := ToCBOR(pi, InfoWire|InfoManifest, ix)
	for _, fm := range infoFormats {
		if _, _, err := all.PathInfo(fm.fields); err == nil {
			t.Errorf("%s accepted every field", fm.name)
		}
		got, _, err := ToCBOR(pi, fm.fields, ix).PathInfo(fm.fields)
		if err != nil {
			t.Fatalf("%s: %v", fm.name, err)
		}
		if got.Path != pi.Path || got.CA != pi.CA || got.Deriver != pi.Deriver {
			t.Errorf("%s: %+v", fm.name, got)
		}
	}
}
