package bundle

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/strictcbor"
)

// encodeV1 writes a bundle of format version 1, as trove wrote it before
// PathInfos took nix.CBORInfo's keys.
func encodeV1(t testing.TB, storeDir string, manifests [][]byte, infos []*nix.PathInfo, nars [][]byte) []byte {
	t.Helper()
	b := appendU64([]byte(magic), 1)
	b = appendBlob(b, []byte(storeDir))
	b = appendU64(b, uint64(len(manifests)))
	for _, m := range manifests {
		b = appendBlob(b, m)
	}
	b = appendU64(b, uint64(len(infos)))
	for _, pi := range infos {
		e, err := strictcbor.Marshal(v1Info{Path: pi.Path.String(), NarHash: pi.NarHash[:], NarSize: pi.NarSize,
			References: pi.RefNames(), Deriver: pi.DeriverName(), Sigs: pi.Sigs, CA: pi.CA})
		if err != nil {
			t.Fatal(err)
		}
		b = appendBlob(b, e)
	}
	for _, n := range nars {
		b = appendBlob(b, n)
	}
	return append(b, trailer...)
}

// TestReadsFormat1: bundles written before format 2 still import, with
// their signatures and content addresses under their old keys.
func TestReadsFormat1(t *testing.T) {
	bf := newBadFixture(t)
	s := bf.a.store
	hd, err := newReader(bytes.NewReader(bf.bundle)).readHead()
	if err != nil {
		t.Fatal(err)
	}
	var nars [][]byte
	for _, pi := range hd.infos {
		nars = append(nars, narOf(t, s, pi.Path))
	}
	im := bf.importer(t)
	rep, err := im.imp(encodeV1(t, s.StoreDir(), hd.manifests, hd.infos, nars))
	if err != nil {
		t.Fatal(err)
	}
	if rep.PathsAdded != len(hd.infos) || len(rep.Manifests) != 1 || !rep.Manifests[0].New {
		t.Fatalf("report %+v", rep)
	}

	// The fields whose keys moved come back under the old ones.
	pi := *hd.infos[0]
	pi.Sigs = []string{"cache.example.org-1:c2ln"}
	pi.CA = "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	old := encodeV1(t, s.StoreDir(), nil, []*nix.PathInfo{&pi}, nil)
	got, err := newReader(bytes.NewReader(old)).readHead()
	if err != nil {
		t.Fatal(err)
	}
	if g := got.infos[0]; g.CA != pi.CA || !reflect.DeepEqual(g.Sigs, pi.Sigs) {
		t.Fatalf("format 1 read as CA %q, sigs %v", g.CA, g.Sigs)
	}
	// And a format 1 info is not read as format 2.
	e, err := strictcbor.Marshal(v1Info{Path: pi.Path.String(), NarHash: pi.NarHash[:], NarSize: pi.NarSize, Sigs: pi.Sigs, CA: pi.CA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeInfo(e, formatVersion); err == nil {
		t.Fatal("a format 1 info decoded as format 2")
	}
}

// TestWritesFormat2: what Create writes carries the current version.
func TestWritesFormat2(t *testing.T) {
	bf := newBadFixture(t)
	if v := bf.bundle[len(magic)]; v != formatVersion || formatVersion != 2 {
		t.Fatalf("bundle of version %d", v)
	}
}
