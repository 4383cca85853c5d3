package nix

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// DefaultStoreDir is the logical store directory, as in Nix.
const DefaultStoreDir = "/nix/store"

const (
	// HashLen is the length in bytes of the digest in a store path name.
	HashLen = 20
	// hash32Len is the length of that digest in Nix base32.
	hash32Len = 32
	// MaxNameLen is Nix's limit on the name part of a store path.
	MaxNameLen = 211
)

// PathHash is the 20-byte digest that names a store path; it is what peers
// ask each other about. It is comparable and usable as a map key.
type PathHash [HashLen]byte

// String renders the digest in Nix base32 (32 characters).
func (h PathHash) String() string { return nixbase32.EncodeToString(h[:]) }

// ParsePathHash parses the 32-character Nix base32 form of a PathHash.
func ParsePathHash(s string) (PathHash, error) {
	var h PathHash
	if len(s) != hash32Len {
		return h, fmt.Errorf("store path hash %q: want %d characters of Nix base32, got %d", s, hash32Len, len(s))
	}
	b, err := nixbase32.DecodeString(s)
	if err != nil {
		return h, fmt.Errorf("store path hash %q: %w", s, err)
	}
	copy(h[:], b)
	return h, nil
}

// Path is a store path without its store directory: a digest and a name.
// The zero Path is invalid.
type Path struct {
	Hash PathHash
	Name string
}

// String is the base name "<hash32>-<name>", as it appears under the store dir.
func (p Path) String() string { return p.Hash.String() + "-" + p.Name }

// Abs is the full path under storeDir.
func (p Path) Abs(storeDir string) string { return storeDir + "/" + p.String() }

// IsZero reports whether p is the zero Path.
func (p Path) IsZero() bool { return p.Name == "" }

// Compare orders paths as Nix does: by their full textual form.
func (p Path) Compare(q Path) int { return strings.Compare(p.String(), q.String()) }

// ErrInvalidName reports a store path name Nix would reject.
var ErrInvalidName = errors.New("invalid store path name")

// CheckName applies Nix's rule for the name part of a store path: 1 to 211
// characters of A-Z a-z 0-9 + - . _ ? =, and not "." or "..", nor starting
// with ".-" or "..-". Nix 2.8 (and 2.21+) accept other names that start with
// a dot, such as "-.zshrc" paths made by `nix-store --add .zshrc`, so trove
// does too: refusing them would make real store paths unimportable.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w %.40q...: %d characters, at most %d allowed", ErrInvalidName, name, len(name), MaxNameLen)
	}
	if name == "." || name == ".." || strings.HasPrefix(name, ".-") || strings.HasPrefix(name, "..-") {
		return fmt.Errorf("%w %q: must not be \".\" or \"..\" or start with \".-\" or \"..-\"", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		if !nameChar(name[i]) {
			return fmt.Errorf("%w %q: character %q is not allowed (only A-Z a-z 0-9 + - . _ ? =)", ErrInvalidName, name, name[i])
		}
	}
	return nil
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '='
}

// ParseBase parses "<hash32>-<name>".
func ParseBase(s string) (Path, error) {
	if len(s) < hash32Len+2 || s[hash32Len] != '-' {
		return Path{}, fmt.Errorf("store path %q: want <32-char hash>-<name>", s)
	}
	h, err := ParsePathHash(s[:hash32Len])
	if err != nil {
		return Path{}, err
	}
	name := s[hash32Len+1:]
	if err := CheckName(name); err != nil {
		return Path{}, fmt.Errorf("store path %q: %w", s, err)
	}
	return Path{Hash: h, Name: name}, nil
}

// ParsePath parses an absolute store path under storeDir. Anything below the
// store path itself ("/nix/store/xxx-foo/bin/sh") is rejected.
func ParsePath(storeDir, s string) (Path, error) {
	dir, base := path.Split(s)
	if strings.TrimSuffix(dir, "/") != storeDir {
		return Path{}, fmt.Errorf("%q is not a store path: not directly in store directory %s", s, storeDir)
	}
	return ParseBase(base)
}

// ParsePathLoose accepts an absolute store path, a path below one (whose
// store path is returned), or a bare "<hash32>-<name>": what a person types.
func ParsePathLoose(storeDir, s string) (Path, error) {
	if rest, ok := strings.CutPrefix(s, storeDir+"/"); ok {
		base, _, _ := strings.Cut(rest, "/")
		return ParseBase(base)
	}
	if !strings.Contains(s, "/") {
		return ParseBase(s)
	}
	return Path{}, fmt.Errorf("%q is not a store path: not in store directory %s", s, storeDir)
}

// MakePath computes a store path as Nix does (makeStorePath): the name hash is
// the XOR-fold to 20 bytes of sha256("<typ>:sha256:<hex inner>:<storeDir>:<name>").
func MakePath(storeDir, typ string, inner Hash, name string) (Path, error) {
	if err := CheckName(name); err != nil {
		return Path{}, err
	}
	s := typ + ":sha256:" + inner.Hex() + ":" + storeDir + ":" + name
	sum := sha256.Sum256([]byte(s))
	var p Path
	for i, b := range sum {
		p.Hash[i%HashLen] ^= b
	}
	p.Name = name
	return p, nil
}

// typeWithRefs builds "<kind>:<ref>...[:self]" with references sorted as full paths.
func typeWithRefs(storeDir, kind string, refs []Path, self bool) string {
	abs := make([]string, len(refs))
	for i, r := range refs {
		abs[i] = r.Abs(storeDir)
	}
	slices.Sort(abs)
	var b strings.Builder
	b.WriteString(kind)
	for _, a := range abs {
		b.WriteByte(':')
		b.WriteString(a)
	}
	if self {
		b.WriteString(":self")
	}
	return b.String()
}

// MakeSourcePath is the path of a recursively hashed, content-addressed tree,
// as `nix-store --add` makes: type "source" over the NAR hash. self says the
// tree refers to its own path.
func MakeSourcePath(storeDir string, narHash Hash, name string, refs []Path, self bool) (Path, error) {
	return MakePath(storeDir, typeWithRefs(storeDir, "source", refs, self), narHash, name)
}

// MakeTextPath is the path of a text file (builtins.toFile, .drv files).
func MakeTextPath(storeDir string, contentHash Hash, name string, refs []Path) (Path, error) {
	return MakePath(storeDir, typeWithRefs(storeDir, "text", refs, false), contentHash, name)
}

// MakeFixedOutputPath is the path of a fixed-output path with a sha256 hash;
// recursive says the hash is of the NAR rather than of a flat file.
func MakeFixedOutputPath(storeDir string, h Hash, recursive bool, name string, refs []Path, self bool) (Path, error) {
	if recursive {
		return MakeSourcePath(storeDir, h, name, refs, self)
	}
	if len(refs) > 0 || self {
		return Path{}, fmt.Errorf("a flat fixed-output path cannot have references (%s)", name)
	}
	r := ""
	inner := sha256.Sum256([]byte("fixed:out:" + r + "sha256:" + h.Hex() + ":"))
	return MakePath(storeDir, "output:out", inner, name)
}
