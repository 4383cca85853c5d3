package bundle

import (
	"reflect"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/strictcbor"
)

// encodeV1 writes a bundle of format version 1, as trove wrote it before
// PathInfos took nix.CBORInfo's keys.
func encodeV1(t testing.TB, storeDir string, manifests [][]byte, infos []*nix.PathInfo, nars [][]byte) []byte {
	t.Helper()
	return craftOf(t, 1, encodeV1Info, storeDir, manifests, infos, nars)
}

func encodeV1Info(pi *nix.PathInfo) ([]byte, error) {
	return strictcbor.Marshal(v1Info{Path: pi.Path.String(), NarHash: pi.NarHash[:], NarSize: pi.NarSize,
		References: pi.RefNames(), Deriver: pi.DeriverName(), Sigs: pi.Sigs, CA: pi.CA})
}

// TestReadsFormat1: bundles written before format 2 still import, with
// their signatures and content addresses under their old keys.
func TestReadsFormat1(t *testing.T) {
	bf := newBadFixture(t)
	hd, s := bf.hd, bf.a.store
	im := bf.importer(t)
	rep, err := im.imp(encodeV1(t, s.StoreDir(), hd.manifests, hd.infos, narsOf(t, s, hd.infos...)))
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
	if g := readHeadOf(t, old).infos[0]; g.CA != pi.CA || !reflect.DeepEqual(g.Sigs, pi.Sigs) {
		t.Fatalf("format 1 read as CA %q, sigs %v", g.CA, g.Sigs)
	}
	// And a format 1 info is not read as format 2.
	e, err := encodeV1Info(&pi)
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
