package group

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/strictcbor"
)

// Limits on what a record and a set may hold; decoders of outside bytes
// refuse more.
const (
	// MaxMembers is the most records (members and removed members) a set
	// holds and a message carries.
	MaxMembers = 1024
	// MaxName is the longest member name, in bytes.
	MaxName = 64
	// MaxPeerIDLen is the longest peer ID, in bytes (an Ed25519 one is 38).
	MaxPeerIDLen = 64
	// MaxVersion is the highest version a record may carry. Versions grow by
	// one per change, so this is never reached honestly; the cap keeps a
	// member from signing a version nobody could ever top.
	MaxVersion = 1 << 53
	// maxSig is the longest signature (Ed25519's is 64 bytes; RSA's more).
	maxSig = 512
)

// Record says that Peer is a member of the group under Name, or (Removed)
// no longer is, as of Version, signed by member By with its libp2p
// identity key. The newest record of a peer is its state (see Set.Merge).
type Record struct {
	Peer    []byte `cbor:"1,keyasint"`
	Name    string `cbor:"2,keyasint,omitempty"`
	Removed bool   `cbor:"3,keyasint,omitempty"`
	Version uint64 `cbor:"4,keyasint"`
	By      []byte `cbor:"5,keyasint"`
	At      int64  `cbor:"6,keyasint"` // Unix seconds when By made the change; shown, not ordered by
	Sig     []byte `cbor:"7,keyasint,omitempty"`
}

// sigContext keeps a record's signature from being valid for anything
// else the same key signs.
const sigContext = "trove group record v1\x00"

// signedBytes is what Sig signs: the context and the record's canonical
// encoding without Sig.
func (r *Record) signedBytes() ([]byte, error) {
	c := *r
	c.Sig = nil
	b, err := strictcbor.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return append([]byte(sigContext), b...), nil
}

// PeerID is the record's subject.
func (r *Record) PeerID() peer.ID { return peer.ID(r.Peer) }

// Signer is the member who signed the record.
func (r *Record) Signer() peer.ID { return peer.ID(r.By) }

// Time is when the change was made.
func (r *Record) Time() time.Time { return time.Unix(r.At, 0) }

// Sign makes a record of change to p (named name, or removed) at version,
// signed by key.
func Sign(key crypto.PrivKey, p peer.ID, name string, removed bool, version uint64, at time.Time) (Record, error) {
	by, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return Record{}, err
	}
	r := Record{Peer: []byte(p), Name: name, Removed: removed, Version: version, By: []byte(by), At: at.Unix()}
	if err := r.checkFields(); err != nil {
		return Record{}, err
	}
	b, err := r.signedBytes()
	if err != nil {
		return Record{}, err
	}
	if r.Sig, err = key.Sign(b); err != nil {
		return Record{}, err
	}
	return r, nil
}

// ErrBadRecord is wrapped by every refusal of a malformed or badly signed
// record.
var ErrBadRecord = errors.New("bad group record")

// CheckName reports whether a member name is acceptable: at most MaxName
// bytes of UTF-8 without control characters.
func CheckName(n string) error {
	switch {
	case len(n) > MaxName:
		return fmt.Errorf("a member name has at most %d bytes, not %d", MaxName, len(n))
	case !utf8.ValidString(n):
		return errors.New("a member name must be UTF-8")
	case slices.ContainsFunc([]rune(n), unicode.IsControl):
		return errors.New("a member name may not hold control characters")
	}
	return nil
}

func (r *Record) checkFields() error {
	if len(r.Peer) == 0 || len(r.Peer) > MaxPeerIDLen || len(r.By) == 0 || len(r.By) > MaxPeerIDLen {
		return fmt.Errorf("%w: peer IDs of %d and %d bytes", ErrBadRecord, len(r.Peer), len(r.By))
	}
	if _, err := peer.IDFromBytes(r.Peer); err != nil {
		return fmt.Errorf("%w: member: %v", ErrBadRecord, err)
	}
	if _, err := peer.IDFromBytes(r.By); err != nil {
		return fmt.Errorf("%w: signer: %v", ErrBadRecord, err)
	}
	if err := CheckName(r.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if r.Removed && r.Name != "" {
		return fmt.Errorf("%w: a removal carries no name", ErrBadRecord)
	}
	if r.Version == 0 || r.Version > MaxVersion {
		return fmt.Errorf("%w: version %d is outside 1..2^53", ErrBadRecord, r.Version)
	}
	return nil
}

// Verify checks the record's fields and that its signer signed it. The
// signer's public key is the one its peer ID embeds (Ed25519 IDs do).
func (r *Record) Verify() error {
	if err := r.checkFields(); err != nil {
		return err
	}
	if len(r.Sig) == 0 || len(r.Sig) > maxSig {
		return fmt.Errorf("%w: a signature of %d bytes", ErrBadRecord, len(r.Sig))
	}
	pub, err := r.Signer().ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: the signer's peer ID holds no public key: %v", ErrBadRecord, err)
	}
	b, err := r.signedBytes()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	ok, err := pub.Verify(b, r.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: the signature of %s does not verify", ErrBadRecord, r.Signer())
	}
	return nil
}

// equal reports whether r and o are the same record, signature and all.
func (r *Record) equal(o *Record) bool {
	return bytes.Equal(r.Peer, o.Peer) && r.Name == o.Name && r.Removed == o.Removed && r.Version == o.Version &&
		bytes.Equal(r.By, o.By) && r.At == o.At && bytes.Equal(r.Sig, o.Sig)
}

// beats reports whether r replaces cur as the state of their peer. The
// order is total, so every member that sees the same records keeps the
// same one: the higher version; at the same version a removal over an
// addition (removal wins ties); then the higher signer, then the higher
// encoding. A peer's own signature never undoes its removal.
func beats(r, cur *Record) bool {
	if cur.Removed && !r.Removed && bytes.Equal(r.By, r.Peer) {
		return false
	}
	if r.Version != cur.Version {
		return r.Version > cur.Version
	}
	if r.Removed != cur.Removed {
		return r.Removed
	}
	if c := bytes.Compare(r.By, cur.By); c != 0 {
		return c > 0
	}
	rb, _ := r.signedBytes()
	cb, _ := cur.signedBytes()
	if c := bytes.Compare(rb, cb); c != 0 {
		return c > 0
	}
	return bytes.Compare(r.Sig, cur.Sig) > 0
}

// recordLimits bound one encoded record: a map of 7 pairs.
var decRecord = strictcbor.MustDecoder(strictcbor.Limits{Wire: 1 << 10, Items: 16, Array: 1, MapPairs: 8, Nested: 1})

// Encode is the record's canonical encoding.
func (r *Record) Encode() ([]byte, error) { return strictcbor.Marshal(r) }

// DecodeRecord decodes and verifies one record.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if err := decRecord.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	return r, r.Verify()
}
