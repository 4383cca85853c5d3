package nix

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Hash is a SHA-256 digest, as Nix uses for narHash. The zero Hash is "no hash".
type Hash [sha256.Size]byte

// String renders the hash as Nix prints a narHash: "sha256:<nix32>".
func (h Hash) String() string { return "sha256:" + nixbase32.EncodeToString(h[:]) }

// SRI renders the hash as "sha256-<base64>", the form `nix path-info --json` uses.
func (h Hash) SRI() string { return "sha256-" + base64.StdEncoding.EncodeToString(h[:]) }

// Hex renders the hash as lowercase hex.
func (h Hash) Hex() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero hash.
func (h Hash) IsZero() bool { return h == Hash{} }

// ParseHash accepts every way Nix writes a SHA-256 hash: "sha256:<nix32>",
// "sha256:<hex>", "sha256:<base64>" and the SRI form "sha256-<base64>".
func ParseHash(s string) (Hash, error) {
	var h Hash
	var body string
	switch {
	case strings.HasPrefix(s, "sha256:"):
		body = s[len("sha256:"):]
	case strings.HasPrefix(s, "sha256-"):
		return h, decodeBase64Hash(&h, s, s[len("sha256-"):])
	default:
		return h, fmt.Errorf("hash %q: want sha256:<nix32|hex|base64> or sha256-<base64>", s)
	}
	switch len(body) {
	case nixbase32.EncodedLen(sha256.Size): // 52
		b, err := nixbase32.DecodeString(body)
		if err != nil {
			return h, fmt.Errorf("hash %q: %w", s, err)
		}
		copy(h[:], b)
		return h, nil
	case hex.EncodedLen(sha256.Size):
		if _, err := hex.Decode(h[:], []byte(body)); err != nil {
			return h, fmt.Errorf("hash %q: %w", s, err)
		}
		return h, nil
	case base64.StdEncoding.EncodedLen(sha256.Size):
		return h, decodeBase64Hash(&h, s, body)
	}
	return h, fmt.Errorf("hash %q: a sha256 digest has 52 nix32, 64 hex or 44 base64 characters, not %d", s, len(body))
}

func decodeBase64Hash(h *Hash, whole, body string) error {
	// The length check also refuses the \r and \n that the decoder skips.
	if len(body) != base64.StdEncoding.EncodedLen(sha256.Size) {
		return fmt.Errorf("hash %q: a sha256 digest has 44 base64 characters, not %d", whole, len(body))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil {
		return fmt.Errorf("hash %q: %w", whole, err)
	}
	if len(b) != sha256.Size {
		return fmt.Errorf("hash %q: %d bytes, want %d", whole, len(b), sha256.Size)
	}
	copy(h[:], b)
	return nil
}
