package p2p

import (
	"bytes"
	"errors"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

// cborHead is the head of a CBOR item of major type major and argument n.
func cborHead(major byte, n int) []byte {
	return []byte{major<<5 | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// emptyStrings is a CBOR array of n empty text strings: n+5 bytes on the
// wire, n string headers (16 bytes each) once decoded.
func emptyStrings(n int) []byte {
	return append(cborHead(4, n), bytes.Repeat([]byte{0x60}, n)...)
}

// infoBomb is an info answer of infos entries, each with refs empty
// references and as many empty signatures: 34 MB at 4096 × 4096, within
// MaxInfoResponse, that decoded to 804 MB in a victim.
func infoBomb(infos, refs int) []byte {
	one := cat([]byte{0xa2, 0x04}, emptyStrings(refs), []byte{0x06}, emptyStrings(refs))
	return cat([]byte{0xa1, 0x01}, cborHead(4, infos), bytes.Repeat(one, infos))
}

// TestDecoderBombsRefusedUnbuilt: messages within their wire caps whose
// decoding would build far more than they weigh (empty strings cost 1 byte
// on the wire and 16 in Go) are refused before decoding builds them.
func TestDecoderBombsRefusedUnbuilt(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		v    any
	}{
		{"info answer of 4096 infos x 4096 empty references and signatures", infoBomb(4096, 4096), new(InfoResponse)},
		{"info answer of 64 infos x 65536 references", infoBomb(64, 1<<16), new(InfoResponse)},
		{"one info of a million references", cat([]byte{0xa1, 0x04}, emptyStrings(1<<20)), new(WireInfo)},
		{"have request of 100k empty hashes", cat([]byte{0xa1, 0x01}, cborHead(4, 100_000), bytes.Repeat([]byte{0x40}, 100_000)), new(HaveRequest)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			alloc := allocDuring(func() { err = decodeMsg(tc.b, tc.v) })
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("accepted, or refused without ErrProtocol: %v", err)
			}
			t.Logf("%d bytes on the wire: refused after allocating %d bytes", len(tc.b), alloc)
			if alloc > 1<<20 {
				t.Fatalf("refusing %d bytes allocated %d bytes", len(tc.b), alloc)
			}
		})
	}
}

// TestLargestAnswersStillDecode: the limits admit what honest servers send
// (TestInfoAnswersUpToTheCap covers the largest chunk indexes): a full
// closure answer of paths with many references.
func TestLargestAnswersStillDecode(t *testing.T) {
	refs := make([]string, 30)
	for i := range refs {
		refs[i] = seedPath
	}
	resp := InfoResponse{}
	items := 0
	for items+nix.CBORInfoItems+len(refs)+1 <= maxInfoItems && len(resp.Infos) < MaxClosureInfos {
		w := seedInfo
		w.References = refs
		resp.Infos = append(resp.Infos, &w)
		items += w.Items()
	}
	var got InfoResponse
	if err := decodeMsg(mustEnc(&resp), &got); err != nil {
		t.Fatalf("%d infos of %d references each: %v", len(resp.Infos), len(refs), err)
	}
	one := seedInfo
	one.References = make([]string, MaxReferences)
	for i := range one.References {
		one.References[i] = seedPath
	}
	one.Sigs = make([]string, MaxSigs)
	if err := decodeMsg(mustEnc(&InfoResponse{Infos: []*WireInfo{&one}}), &got); err != nil {
		t.Fatalf("an info of %d references and %d signatures: %v", MaxReferences, MaxSigs, err)
	}
}

// TestWireInfoSizeBoundsItsEncoding: servers cut answers at MaxInfoResponse
// and reserve memory by WireInfo.size, which must not undercount.
func TestWireInfoSizeBoundsItsEncoding(t *testing.T) {
	big := seedInfo
	big.References = make([]string, MaxReferences)
	for i := range big.References {
		big.References[i] = seedPath
	}
	big.Sigs = []string{"cache.example.org-1:" + string(bytes.Repeat([]byte{'A'}, 88))}
	for _, w := range []*WireInfo{&seedInfo, &big, {}} {
		if enc := len(mustEnc(w)); w.SizeBound() < enc {
			t.Errorf("size() = %d, encoded %d bytes", w.SizeBound(), enc)
		}
	}
}
