package p2p

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/group"
)

// seedGroup is a small signed group and its addresses, for seeds.
func seedGroup(t testing.TB) ([]group.Record, []PeerAddrs) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := crypto.GenerateEd25519Key(rand.Reader)
	op, _ := peer.IDFromPublicKey(other)
	s := group.NewSet()
	if _, err := s.Change(k, op, "laptop", false, time.Unix(1e9, 0)); err != nil {
		t.Fatal(err)
	}
	a := ma.StringCast("/ip4/10.0.0.2/tcp/4807").Bytes()
	return s.Records(), []PeerAddrs{{Peer: []byte(op), Addrs: [][]byte{a}}}
}

// Join requests and group messages from peers: no panic, refusals wrap
// ErrProtocol, what is accepted re-encodes to a fixed point and passes (or
// is refused by) updateOf without panicking.
func FuzzDecodeJoinRequest(f *testing.F) {
	a := ma.StringCast("/ip4/10.0.0.2/udp/4807/quic-v1").Bytes()
	addSeeds(f,
		mustEnc(&JoinRequest{Secret: make([]byte, group.SecretLen), Name: "build-07", Addrs: [][]byte{a}}),
		mustEnc(&JoinRequest{Secret: make([]byte, 17)}),
		mustEnc(&JoinRequest{Addrs: make([][]byte, maxMemberAddrs+1)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		req := decodeAs[JoinRequest](t, b)
		if req == nil {
			return
		}
		if _, err := addrsOf(req.Addrs); err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatal(err)
		}
	})
}

func FuzzDecodeGroupMessage(f *testing.F) {
	recs, addrs := seedGroup(f)
	bad := recs[0]
	bad.Sig = []byte{1, 2, 3}
	addSeeds(f,
		mustEnc(&GroupMessage{Records: recs, Addrs: addrs}),
		mustEnc(&GroupMessage{Records: []group.Record{bad}}),
		mustEnc(&GroupMessage{Addrs: []PeerAddrs{{Peer: []byte("x"), Addrs: [][]byte{{0xff}}}}}),
		mustEnc(&JoinResponse{Err: "the invitation was already used"}),
		mustEnc(&JoinResponse{Records: recs, Addrs: addrs}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, check := range []func() ([]group.Record, []PeerAddrs, bool){
			func() ([]group.Record, []PeerAddrs, bool) {
				m := decodeAs[GroupMessage](t, b)
				if m == nil {
					return nil, nil, false
				}
				return m.Records, m.Addrs, true
			},
			func() ([]group.Record, []PeerAddrs, bool) {
				m := decodeAs[JoinResponse](t, b)
				if m == nil {
					return nil, nil, false
				}
				return m.Records, m.Addrs, true
			},
		} {
			recs, addrs, ok := check()
			if !ok {
				continue
			}
			if _, err := updateOf(recs, addrs); err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatal(err)
			}
			// Merging anything decoded must not panic, and only verified
			// records may enter.
			s := group.NewSet()
			for _, p := range s.Merge(recs, func(peer.ID) bool { return true }) {
				r, _ := s.Get(p)
				if err := r.Verify(); err != nil {
					t.Fatalf("an unverified record entered the set: %v", err)
				}
			}
		}
	})
}

// A group message of MaxMembers records fits its cap.
func TestGroupMessageCap(t *testing.T) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	s := group.NewSet()
	for range group.MaxMembers - 1 {
		_, pub, _ := crypto.GenerateEd25519Key(rand.Reader)
		p, _ := peer.IDFromPublicKey(pub)
		if _, err := s.Change(k, p, "a-member-with-a-long-name-of-forty-bytes", false, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var addrs []PeerAddrs
	for _, r := range s.Records() {
		pa := PeerAddrs{Peer: r.Peer}
		for range maxMemberAddrs {
			pa.Addrs = append(pa.Addrs, ma.StringCast("/ip6/fe80::1234:5678:9abc:def0/udp/4807/quic-v1").Bytes())
		}
		addrs = append(addrs, pa)
	}
	b := mustEnc(&GroupMessage{Records: s.Records(), Addrs: addrs})
	var m GroupMessage
	if err := decodeMsg(b, &m); err != nil {
		t.Fatalf("a full group (%d bytes) is refused: %v", len(b), err)
	}
	if len(b) > maxGroupMessage {
		t.Fatalf("a full group takes %d bytes, over the cap of %d", len(b), maxGroupMessage)
	}
	t.Logf("a full group: %d bytes of %d", len(b), maxGroupMessage)
}
