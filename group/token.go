package group

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// An invitation token carries what a new machine needs to reach the
// member that invited it and to prove it was invited: the member's peer
// ID (authenticated by libp2p's handshake when the machine dials it), a
// few of its addresses, and a random secret of SecretLen bytes that the
// member holds only the SHA-256 of. It is written
//
//	trove1-<base32 of: version 1 | secret | uvarint len, peer ID |
//	        count | (uvarint len, multiaddr)... | first 4 bytes of SHA-256 of the rest>
//
// in lower-case RFC 4648 base32 without padding (case is ignored when
// read): about 160 characters for one IPv4 address on TCP and QUIC, to be
// copied and pasted whole. The checksum lets a token cut short or mistyped
// be refused here, saying so, rather than as a wrong secret by the member.
const (
	TokenPrefix = "trove1-"
	// SecretLen is the secret's length: 128 bits, beyond guessing.
	SecretLen = 16
	// MaxTokenAddrs is the most addresses a token carries.
	MaxTokenAddrs = 8
	// MaxTokenLen caps a token's text, checked before decoding.
	MaxTokenLen  = 1024
	tokenVersion = 1
	maxAddrLen   = 64
	checksumLen  = 4
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token is a decoded invitation. Its Secret must never be logged.
type Token struct {
	Peer   peer.ID
	Addrs  []ma.Multiaddr
	Secret [SecretLen]byte
}

// NewSecret returns a fresh random secret.
func NewSecret() ([SecretLen]byte, error) {
	var s [SecretLen]byte
	_, err := rand.Read(s[:])
	return s, err
}

// SecretHash is what a member keeps of a secret.
func SecretHash(s []byte) [32]byte { return sha256.Sum256(s) }

// String names the token without its secret, so that printing or logging
// a Token by mistake gives nothing away; Encode writes it.
func (t *Token) String() string { return "invitation to " + t.Peer.String() }

// GoString is String, for %#v.
func (t *Token) GoString() string { return t.String() }

// Encode writes the token. The result is a secret.
func (t *Token) Encode() string {
	var b bytes.Buffer
	b.WriteByte(tokenVersion)
	b.Write(t.Secret[:])
	putBytes(&b, []byte(t.Peer))
	addrs := t.Addrs[:min(len(t.Addrs), MaxTokenAddrs)]
	b.WriteByte(byte(len(addrs)))
	for _, a := range addrs {
		putBytes(&b, a.Bytes())
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:checksumLen])
	return TokenPrefix + strings.ToLower(b32.EncodeToString(b.Bytes()))
}

func putBytes(b *bytes.Buffer, p []byte) {
	var n [binary.MaxVarintLen64]byte
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
	b.Write(p)
}

// ErrToken is wrapped by every refusal of a malformed token. Its messages
// never quote the token.
var ErrToken = errors.New("not a valid trove invitation")

// ParseToken decodes an invitation token, ignoring surrounding space and
// letter case.
func ParseToken(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxTokenLen {
		return nil, fmt.Errorf("%w: %d characters, more than any invitation has", ErrToken, len(s))
	}
	if len(s) < len(TokenPrefix) || !strings.EqualFold(s[:len(TokenPrefix)], TokenPrefix) {
		return nil, fmt.Errorf("%w: an invitation starts with %q (print one with trove invite on a member)", ErrToken, TokenPrefix)
	}
	raw, err := b32.DecodeString(strings.ToUpper(s[len(TokenPrefix):]))
	if err != nil {
		return nil, fmt.Errorf("%w: it is damaged (a character that base32 does not have, or cut short): copy it again, whole", ErrToken)
	}
	if len(raw) < 1+SecretLen+checksumLen {
		return nil, fmt.Errorf("%w: it is too short: copy it again, whole", ErrToken)
	}
	body, sum := raw[:len(raw)-checksumLen], raw[len(raw)-checksumLen:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:checksumLen]) {
		return nil, fmt.Errorf("%w: its checksum does not match, so it was changed or cut: copy it again, whole", ErrToken)
	}
	if body[0] != tokenVersion {
		return nil, fmt.Errorf("%w: it is of version %d, which this trove does not read (upgrade trove)", ErrToken, body[0])
	}
	t := &Token{}
	copy(t.Secret[:], body[1:1+SecretLen])
	r := bytes.NewReader(body[1+SecretLen:])
	id, err := getBytes(r, MaxPeerIDLen)
	if err != nil {
		return nil, fmt.Errorf("%w: peer ID: %v", ErrToken, err)
	}
	if t.Peer, err = peer.IDFromBytes(id); err != nil {
		return nil, fmt.Errorf("%w: peer ID: %v", ErrToken, err)
	}
	n, err := r.ReadByte()
	if err != nil || n > MaxTokenAddrs {
		return nil, fmt.Errorf("%w: its address count is missing or above %d", ErrToken, MaxTokenAddrs)
	}
	for range n {
		b, err := getBytes(r, maxAddrLen)
		if err != nil {
			return nil, fmt.Errorf("%w: address: %v", ErrToken, err)
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%w: address: %v", ErrToken, err)
		}
		t.Addrs = append(t.Addrs, a)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after its addresses", ErrToken, r.Len())
	}
	return t, nil
}

func getBytes(r *bytes.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, errors.New("truncated")
	}
	if n == 0 || n > uint64(max) || n > uint64(r.Len()) {
		return nil, fmt.Errorf("a length of %d", n)
	}
	b := make([]byte, n)
	r.Read(b)
	return b, nil
}
