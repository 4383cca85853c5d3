package group

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func testToken(t testing.TB, addrs ...string) *Token {
	_, id := newKey(t)
	tok := &Token{Peer: id}
	for _, a := range addrs {
		tok.Addrs = append(tok.Addrs, ma.StringCast(a))
	}
	for i := range tok.Secret {
		tok.Secret[i] = byte(i * 7)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	for _, addrs := range [][]string{
		nil,
		{"/ip4/10.0.0.1/tcp/4807"},
		{"/ip4/192.168.1.20/tcp/4807", "/ip4/192.168.1.20/udp/4807/quic-v1", "/ip6/fe80::1/tcp/4807"},
	} {
		tok := testToken(t, addrs...)
		s := tok.Encode()
		if !strings.HasPrefix(s, TokenPrefix) || strings.ToLower(s) != s {
			t.Fatalf("token %q: want lower case with prefix %q", s, TokenPrefix)
		}
		for _, in := range []string{s, strings.ToUpper(s), "  " + s + "\n"} {
			got, err := ParseToken(in)
			if err != nil {
				t.Fatalf("ParseToken(%d addrs): %v", len(addrs), err)
			}
			if got.Peer != tok.Peer || got.Secret != tok.Secret || len(got.Addrs) != len(addrs) {
				t.Fatalf("round trip: got %v %d addrs", got.Peer, len(got.Addrs))
			}
			for i := range addrs {
				if got.Addrs[i].String() != addrs[i] {
					t.Errorf("address %d: %s, want %s", i, got.Addrs[i], addrs[i])
				}
			}
		}
		t.Logf("%d addresses: %d characters", len(addrs), len(s))
	}
}

// A token printed by mistake (%v, %s, a log line) shows no secret.
func TestTokenStringHidesSecret(t *testing.T) {
	tok := testToken(t, "/ip4/10.0.0.1/tcp/4807")
	enc := tok.Encode()
	for _, s := range []string{tok.String(), tok.GoString()} {
		if strings.Contains(s, enc[len(TokenPrefix):len(TokenPrefix)+20]) {
			t.Errorf("%q shows the token", s)
		}
	}
}

func TestParseTokenRefuses(t *testing.T) {
	good := testToken(t, "/ip4/10.0.0.1/tcp/4807").Encode()
	body := good[len(TokenPrefix):]
	flip := func(s string, i int) string {
		c := byte('a')
		if s[i] == 'a' {
			c = 'b'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "starts with"},
		{"other prefix", "trove2-" + body, "starts with"},
		{"no prefix", body, "starts with"},
		{"bad base32", TokenPrefix + body[:10] + "!" + body[11:], "damaged"},
		{"cut short", good[:len(good)-5], "copy it again"},
		{"one character changed", flip(good, len(TokenPrefix)+30), "checksum"},
		{"tiny", TokenPrefix + "aaaa", "too short"},
		{"huge", TokenPrefix + strings.Repeat("a", 2000), "more than any invitation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.in)
			if !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseToken: %v, want ErrToken saying %q", err, tc.want)
			}
			if len(tc.in) > len(TokenPrefix)+8 && strings.Contains(err.Error(), tc.in[len(TokenPrefix):len(TokenPrefix)+8]) {
				t.Errorf("the refusal quotes the token: %v", err)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(testToken(f, "/ip4/10.0.0.1/tcp/4807", "/ip4/10.0.0.1/udp/4807/quic-v1").Encode())
	f.Add(testToken(f).Encode())
	f.Add(TokenPrefix)
	f.Add("trove1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrToken) {
				t.Fatalf("refusal without ErrToken: %v", err)
			}
			return
		}
		again, err := ParseToken(tok.Encode())
		if err != nil || again.Peer != tok.Peer || again.Secret != tok.Secret || len(again.Addrs) != len(tok.Addrs) {
			t.Fatalf("an accepted token does not re-encode: %v", err)
		}
	})
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// Two members that add each other converge on the same set whatever the
// order they hear things in.
func TestMergeConverges(t *testing.T) {
	ka, a := newKey(t)
	kb, b := newKey(t)
	_, c := newKey(t)
	sa, sb := NewSet(), NewSet()
	mustChange(t, sa, ka, b, "b", false)
	mustChange(t, sb, kb, a, "a", false)
	mustChange(t, sb, kb, c, "c", false)
	sa.Merge(sb.Records(), nil)
	sb.Merge(sa.Records(), nil)
	if !sameSet(sa, sb) {
		t.Fatalf("sets differ:\n%v\n%v", sa.Records(), sb.Records())
	}
	for _, p := range []peer.ID{a, b, c} {
		if !sa.Live(p) {
			t.Errorf("%s is not a member", p)
		}
	}
}

// A removal made after an addition was seen wins over it; a removal and an
// addition of the same version: the removal wins; a removed peer cannot
// add itself back, even at a higher version, nor sign anything.
func TestMergeRemovalWins(t *testing.T) {
	ka, _ := newKey(t)
	kb, b := newKey(t)
	kc, c := newKey(t)
	s := NewSet()
	mustChange(t, s, ka, b, "b", false)
	mustChange(t, s, ka, c, "c", false)
	rem := mustChange(t, s, ka, c, "", true)[0]
	if s.Live(c) {
		t.Fatal("c is still a member after its removal")
	}
	// c signs its own return at a far higher version.
	back, err := Sign(kc, c, "c", false, rem.Version+100, t0)
	if err != nil {
		t.Fatal(err)
	}
	_, d := newKey(t)
	addD, _ := Sign(kc, d, "d", false, rem.Version+101, t0)
	if got := s.Merge([]Record{back, addD}, nil); len(got) != 0 || s.Live(c) || s.Live(d) {
		t.Fatalf("a removed member re-added itself or added another: changed %v", got)
	}
	// b re-adding c with the same version as the removal loses; above, wins.
	tie, _ := Sign(kb, c, "c", false, rem.Version, t0)
	if s.Merge([]Record{tie}, nil); s.Live(c) {
		t.Fatal("an addition beat a removal of the same version")
	}
	above, _ := Sign(kb, c, "c", false, rem.Version+1, t0)
	if s.Merge([]Record{above}, nil); !s.Live(c) {
		t.Fatal("another member could not add c back at a higher version")
	}
}

// Records from a peer that is no member, forged or altered are refused.
func TestMergeRefuses(t *testing.T) {
	ka, a := newKey(t)
	kx, x := newKey(t)
	_, y := newKey(t)
	s := NewSet()
	mustChange(t, s, ka, a, "a", false)
	fromStranger, _ := Sign(kx, y, "y", false, 10, t0)
	selfAdd, _ := Sign(kx, x, "x", false, 10, t0)
	altered, _ := Sign(ka, y, "y", false, 10, t0)
	altered.Name = "evil"
	tooHigh := Record{Peer: []byte(y), Version: MaxVersion + 1, By: []byte(a), At: 1}
	got := s.Merge([]Record{fromStranger, selfAdd, altered, tooHigh}, nil)
	if len(got) != 0 || s.Live(x) || s.Live(y) {
		t.Fatalf("refused records changed the set: %v", got)
	}
	if _, err := Sign(ka, y, "", false, MaxVersion+1, t0); !errors.Is(err, ErrBadRecord) {
		t.Errorf("signing above MaxVersion: %v", err)
	}
	if _, err := Sign(ka, y, "bad\nname", false, 1, t0); !errors.Is(err, ErrBadRecord) {
		t.Errorf("signing a name with a newline: %v", err)
	}
}

// A joining machine adopts the inviter's set even where a signer's own
// record comes later, and the joining set holds everyone.
func TestAdopt(t *testing.T) {
	ka, _ := newKey(t)
	kb, b := newKey(t)
	_, c := newKey(t)
	sa := NewSet()
	mustChange(t, sa, ka, b, "b", false)
	sb := NewSet()
	sb.Adopt(sa.Records(), peerOf(t, ka))
	mustChange(t, sb, kb, c, "c", false)
	sc := NewSet()
	if got := sc.Adopt(sb.Records(), b); len(got) != 3 {
		t.Fatalf("adopted %d records, want 3", len(got))
	}
	if !sameSet(sb, sc) {
		t.Fatal("the joiner's set differs from the inviter's")
	}
	// A plain merge of the same records could not anchor the first member.
	sd := NewSet()
	if got := sd.Merge(sb.Records(), func(p peer.ID) bool { return p == b }); len(got) == 3 {
		t.Fatal("Merge took records no member of this set signed")
	}
}

func TestChangeByRemovedMachine(t *testing.T) {
	ka, a := newKey(t)
	kb, b := newKey(t)
	s := NewSet()
	mustChange(t, s, ka, b, "b", false)
	sb := NewSet()
	sb.Adopt(s.Records(), a)
	mustChange(t, s, ka, b, "", true)
	sb.Merge(s.Records(), nil)
	var re *RemovedError
	if _, err := sb.Change(kb, a, "", true, t0); !errors.As(err, &re) || re.By != a {
		t.Fatalf("a removed machine changed the group: %v", err)
	}
	if _, err := s.Change(ka, a, "", true, t0); err == nil {
		t.Fatal("a machine removed itself")
	}
}

func TestInvites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "invites.json")
	b, err := OpenInvites(path)
	if err != nil {
		t.Fatal(err)
	}
	one, _, err := b.Create(1, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	two, iv2, err := b.Create(2, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	short, _, _ := b.Create(5, time.Second, t0)
	if !b.AnyOpen(t0) {
		t.Fatal("no invitation open")
	}
	// Reopened from the file, as after a restart.
	if b, err = OpenInvites(path); err != nil {
		t.Fatal(err)
	}
	refused := func(secret []byte, now time.Time, want string) {
		t.Helper()
		_, err := b.Redeem(secret, now)
		var re *RefusedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Redeem: %v, want a refusal saying %q", err, want)
		}
	}
	if _, err := b.Redeem(one[:], t0); err != nil {
		t.Fatal(err)
	}
	refused(one[:], t0, "already used (1 of 1 uses)")
	if _, err := b.Redeem(two[:], t0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Redeem(two[:], t0); err != nil {
		t.Fatal(err)
	}
	refused(two[:], t0, "already used (2 of 2")
	refused(short[:], t0.Add(2*time.Second), "expired")
	var wrong [SecretLen]byte
	refused(wrong[:], t0, "not known")
	if ok, err := b.Revoke(iv2.ID); !ok || err != nil {
		t.Fatalf("Revoke: %v %v", ok, err)
	}
	refused(two[:], t0, "revoked")
	if b.AnyOpen(t0.Add(2 * time.Hour)) {
		t.Error("an invitation is open after every one expired")
	}
	if n := len(b.List(t0.Add(3 * 24 * time.Hour))); n != 0 {
		t.Errorf("%d invitations remembered days after they closed", n)
	}
	if _, _, err := b.Create(0, time.Hour, t0); err == nil {
		t.Error("an invitation of 0 uses")
	}
}

func mustChange(t *testing.T, s *Set, k crypto.PrivKey, p peer.ID, name string, removed bool) []Record {
	t.Helper()
	rs, err := s.Change(k, p, name, removed, t0)
	if err != nil {
		t.Fatal(err)
	}
	return rs[len(rs)-1:]
}

func peerOf(t *testing.T, k crypto.PrivKey) peer.ID {
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sameSet(a, b *Set) bool {
	ra, rb := a.Records(), b.Records()
	if len(ra) != len(rb) {
		return false
	}
	for i := range ra {
		x, _ := ra[i].signedBytes()
		y, _ := rb[i].signedBytes()
		if string(x) != string(y) {
			return false
		}
	}
	return true
}

// Merging records already held checks no signature again; a new record,
// and a held one that differs in any byte, are checked.
func TestMergeVerifiesOnlyNew(t *testing.T) {
	ka, a := newKey(t)
	_, b := newKey(t)
	_, c := newKey(t)
	sa, sb := NewSet(), NewSet()
	mustChange(t, sa, ka, b, "b", false)
	sb.Merge(sa.Records(), func(p peer.ID) bool { return p == a })
	n := 0
	defer func(v func(*Record) error) { verify = v }(verify)
	verify = func(r *Record) error { n++; return r.Verify() }
	sb.Merge(sa.Records(), nil)
	if n != 0 {
		t.Errorf("merging %d held records verified %d signatures, want 0", len(sa.Records()), n)
	}
	mustChange(t, sa, ka, c, "c", false)
	recs := sa.Records()
	for i := range recs {
		if recs[i].PeerID() == b {
			recs[i].At++ // held, but not as sent: its signature no longer verifies
		}
	}
	n = 0
	if changed := sb.Merge(recs, nil); len(changed) != 1 || changed[0] != c {
		t.Errorf("changed %v, want only %s", changed, c)
	}
	if n != len(recs)-1 {
		t.Errorf("merging %d records, one of them held as sent, verified %d signatures, want %d", len(recs), n, len(recs)-1)
	}
}
