package manifest

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/zeebo/blake3"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/strictcbor"
)

// Manifest is one signed generation of a named configuration: its root
// store path, how to activate it, and the PathInfos (with chunk index IDs)
// of its whole closure, so a follower can believe every path and every
// chunk index through this one signature.
type Manifest struct {
	Name       string
	Generation uint64
	Root       nix.Path
	Activate   string // command relative to the root, "" for none
	// Check is a health check relative to the root ("" for none): run
	// after the activation, it must succeed within the follower's
	// deadline, or the follower rolls back.
	Check     string
	Created   time.Time
	Publisher PublicKey
	Previous  ID // zero for generation 1
	Paths     []*nix.PathInfo
	Sig       string // Publisher's signature of the body
}

// ID content-addresses a signed manifest: BLAKE3 of its encoding.
type ID [32]byte

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// CID renders the ID as a CIDv1 (raw, blake3).
func (id ID) CID() cid.Cid {
	m, _ := mh.Encode(id[:], mh.BLAKE3)
	return cid.NewCidV1(cid.Raw, m)
}

func (id ID) String() string { return id.CID().String() }

// ParseID parses the string form of an ID.
func ParseID(s string) (ID, error) {
	c, err := chunk.ParseID(s) // same shape: CIDv1 raw blake3-256
	return ID(c), err
}

// Limits on what a manifest may hold: a hostile one cannot make us
// allocate without bound. A NixOS system closure has about 3000 paths and
// 25,000 references, a path at most a few hundred; these leave five to
// ten times that room, and a manifest that fills them takes about 16 MiB.
const (
	MaxManifestSize = 16 << 20
	// MaxPaths is the most paths one manifest may list.
	MaxPaths = 1 << 14
	// MaxReferences is the most references one path may have.
	MaxReferences = nix.MaxReferences
	// maxTotalRefs is the most references of all paths together.
	maxTotalRefs = 1 << 18
	maxNameLen   = 64
)

// CheckName validates a configuration name: 1–64 characters of
// A-Z a-z 0-9 . _ -, not starting with '.' or '-'. Names become file and
// topic names, so "/" and ".." are impossible by construction.
func CheckName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("configuration name %q: 1 to %d characters", name, maxNameLen)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("configuration name %q: must not start with '.' or '-'", name)
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("configuration name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// checkActivate validates the activation command path: relative, inside
// the root, clean.
func checkActivate(rel string) error { return CheckCommand("activation command", rel) }

// CheckCommand validates a command a manifest names (what, e.g. "health
// check"): a clean path relative to the root, so that a publisher can make
// a follower run nothing outside the published closure.
func CheckCommand(what, rel string) error {
	if rel == "" {
		return nil
	}
	if path.IsAbs(rel) || path.Clean(rel) != rel || rel == "." || strings.HasPrefix(rel, "../") || rel == ".." || strings.ContainsRune(rel, 0) {
		return fmt.Errorf("%s %q: must be a clean path relative to the root, like bin/activate", what, rel)
	}
	return nil
}

// wire forms. Integer keys keep the encoding compact; Core Deterministic
// Encoding makes it canonical, so the signature and the ID are stable.
type wireBody struct {
	Version    uint64          `cbor:"1,keyasint"`
	Name       string          `cbor:"2,keyasint"`
	Generation uint64          `cbor:"3,keyasint"`
	Root       string          `cbor:"4,keyasint"`
	Activate   string          `cbor:"5,keyasint,omitempty"`
	Created    int64           `cbor:"6,keyasint"`
	Publisher  string          `cbor:"7,keyasint"`
	Previous   []byte          `cbor:"8,keyasint,omitempty"`
	Paths      []*nix.CBORInfo `cbor:"9,keyasint"`
	Check      string          `cbor:"10,keyasint,omitempty"`
}

// pathFields are the optional PathInfo fields a manifest carries: the
// chunk index ID, no signatures (the manifest's own covers its paths).
// nix.CBORInfo's keys are this format's, so manifests signed before it
// existed keep their bytes.
const pathFields = nix.InfoManifest

type wireSigned struct {
	Body strictcbor.Bytes `cbor:"1,keyasint"` // decoded in place: up to 16 MiB
	Sig  string           `cbor:"2,keyasint"`
}

const formatVersion = 1

// Decoders bound what decoding builds, not only the bytes: an empty
// reference is one byte of CBOR and a 16-byte string header in Go. The
// body's items are its own 19, 15 per path (a map of 7 fields) and the
// references; each costs strictcbor.ItemCost besides its payload.
var (
	decSigned = strictcbor.MustDecoder(strictcbor.Limits{Wire: MaxManifestSize, Items: 8, Array: 16, MapPairs: 4, Nested: 2})
	decBody   = strictcbor.MustDecoder(strictcbor.Limits{
		Wire: MaxManifestSize, Items: 32 + MaxPaths*15 + maxTotalRefs, Array: max(MaxPaths, MaxReferences), MapPairs: 16, Nested: 4,
	})
)

// signedMessage is what the publisher signs: a domain prefix (so a
// manifest signature can never pass as a Nix path signature) and the body.
func signedMessage(body []byte) string { return "trove-manifest-1\n" + string(body) }

func (m *Manifest) body() ([]byte, error) {
	if err := CheckName(m.Name); err != nil {
		return nil, err
	}
	if err := CheckCommand("health check", m.Check); err != nil {
		return nil, err
	}
	if err := checkActivate(m.Activate); err != nil {
		return nil, err
	}
	w := wireBody{
		Version: formatVersion, Name: m.Name, Generation: m.Generation, Root: m.Root.String(),
		Activate: m.Activate, Check: m.Check, Created: m.Created.Unix(), Publisher: m.Publisher.String(),
	}
	if !m.Previous.IsZero() {
		w.Previous = m.Previous[:]
	}
	for _, pi := range m.Paths {
		w.Paths = append(w.Paths, nix.ToCBOR(pi, pathFields, nil))
	}
	return strictcbor.Marshal(w)
}

// Sign fills Publisher and Sig, after checking the manifest is well-formed
// and its closure closed.
func (m *Manifest) Sign(k SecretKey) error {
	m.Publisher = k.Public()
	slices.SortFunc(m.Paths, func(a, b *nix.PathInfo) int { return a.Path.Compare(b.Path) })
	if err := m.checkClosure(); err != nil {
		return err
	}
	b, err := m.body()
	if err != nil {
		return err
	}
	m.Sig = k.Sign(signedMessage(b))
	return nil
}

// Encode is the signed manifest's canonical bytes.
func (m *Manifest) Encode() ([]byte, error) {
	if m.Sig == "" {
		return nil, errors.New("manifest is not signed")
	}
	b, err := m.body()
	if err != nil {
		return nil, err
	}
	return strictcbor.Marshal(wireSigned{Body: b, Sig: m.Sig})
}

// ID is the content address of the signed manifest.
func (m *Manifest) ID() (ID, error) {
	b, err := m.Encode()
	if err != nil {
		return ID{}, err
	}
	return ID(blake3.Sum256(b)), nil
}

// ErrBadManifest is wrapped by every decoding and verification failure.
var ErrBadManifest = errors.New("invalid manifest")

// Decode parses a signed manifest strictly and checks its signature
// against its own publisher key and that its closure is closed. Whether
// that key is trusted for the name is the Keyring's question (Verify).
func Decode(b []byte) (*Manifest, error) {
	bad := func(f string, a ...any) (*Manifest, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(f, a...))
	}
	if len(b) > MaxManifestSize {
		return bad("%d bytes, at most %d", len(b), MaxManifestSize)
	}
	var s wireSigned
	if err := decSigned.Unmarshal(b, &s); err != nil {
		return bad("%v", err)
	}
	var w wireBody
	if err := decBody.Unmarshal(s.Body, &w); err != nil {
		return bad("%v", err)
	}
	if len(w.Paths) > MaxPaths {
		return bad("%d paths, at most %d", len(w.Paths), MaxPaths)
	}
	if w.Version != formatVersion {
		return bad("format version %d; this trove reads version %d (upgrade trove)", w.Version, formatVersion)
	}
	m := &Manifest{Name: w.Name, Generation: w.Generation, Activate: w.Activate, Check: w.Check, Created: time.Unix(w.Created, 0), Sig: s.Sig}
	if err := CheckName(w.Name); err != nil {
		return bad("%v", err)
	}
	if err := CheckCommand("health check", w.Check); err != nil {
		return bad("%v", err)
	}
	if err := checkActivate(w.Activate); err != nil {
		return bad("%v", err)
	}
	if w.Generation == 0 {
		return bad("generation 0")
	}
	var err error
	if m.Root, err = nix.ParseBase(w.Root); err != nil {
		return bad("root: %v", err)
	}
	if m.Publisher, err = ParsePublicKey(w.Publisher); err != nil {
		return bad("%v", err)
	}
	if len(w.Previous) != 0 {
		if len(w.Previous) != 32 {
			return bad("previous manifest ID has %d bytes", len(w.Previous))
		}
		m.Previous = ID(w.Previous)
	}
	for _, wp := range w.Paths {
		if wp == nil {
			return bad("an empty path entry")
		}
		pi, _, err := wp.PathInfo(pathFields)
		if err != nil {
			return bad("%v", err)
		}
		m.Paths = append(m.Paths, pi)
	}
	if !slices.IsSortedFunc(m.Paths, func(a, b *nix.PathInfo) int { return a.Path.Compare(b.Path) }) {
		return bad("paths not sorted")
	}
	// Re-encoding must give the same body: the encoding is canonical.
	if again, err := m.body(); err != nil || string(again) != string(s.Body) {
		return bad("not in canonical form")
	}
	if !m.Publisher.Verify(signedMessage(s.Body), s.Sig) {
		return bad("signature does not verify with its publisher key %s", m.Publisher.Name)
	}
	if err := m.checkClosure(); err != nil {
		return bad("%v", err)
	}
	return m, nil
}

// checkClosure requires the root and every reference to be listed.
func (m *Manifest) checkClosure() error {
	have := make(map[nix.Path]bool, len(m.Paths))
	for _, pi := range m.Paths {
		if have[pi.Path] {
			return fmt.Errorf("%s is listed twice", pi.Path)
		}
		have[pi.Path] = true
	}
	if !have[m.Root] {
		return fmt.Errorf("the root %s is not among the manifest's paths", m.Root)
	}
	for _, pi := range m.Paths {
		for _, r := range pi.References {
			if !have[r] {
				return fmt.Errorf("the closure is not closed: %s refers to %s, which is not listed", pi.Path, r)
			}
		}
	}
	return nil
}

// Vouched returns the manifest's PathInfos by hash, for sync.Options.Vouched.
func (m *Manifest) Vouched() map[nix.PathHash]*nix.PathInfo {
	out := make(map[nix.PathHash]*nix.PathInfo, len(m.Paths))
	for _, pi := range m.Paths {
		out[pi.Path.Hash] = pi
	}
	return out
}
