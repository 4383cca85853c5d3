package nix

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trove-p2p/trove/chunk"
)

// PathInfo is what the store knows about a valid path, as Nix's ValidPathInfo
// plus trove's chunk index ID.
type PathInfo struct {
	Path       Path
	NarHash    Hash
	NarSize    uint64
	References []Path // sorted, may include Path itself
	Deriver    Path   // zero when unknown
	Sigs       []string
	// CA is Nix's content-address assertion ("fixed:r:sha256:...",
	// "text:sha256:..."), empty for input-addressed paths.
	CA               string
	RegistrationTime time.Time
	Ultimate         bool     // built or added here rather than substituted
	ChunkIndex       chunk.ID // ID of the NAR's chunk index
}

// Fingerprint is the message Nix signs for a path:
// "1;<path>;<narHash>;<narSize>;<refs, comma-joined full paths>".
func (pi *PathInfo) Fingerprint(storeDir string) string {
	refs := make([]string, len(pi.References))
	for i, r := range pi.References {
		refs[i] = r.Abs(storeDir)
	}
	slices.Sort(refs)
	return "1;" + pi.Path.Abs(storeDir) + ";" + pi.NarHash.String() + ";" +
		strconv.FormatUint(pi.NarSize, 10) + ";" + strings.Join(refs, ",")
}

// Formats that carry a PathInfo (wire messages, bundles, manifests) name
// paths by their base names (<hash32>-<name>) and hashes by their raw
// bytes. RefNames, DeriverName and PathInfoFromNames are the one
// conversion each way.

// RefNames returns the base names of pi's references.
func (pi *PathInfo) RefNames() []string {
	var out []string
	for _, r := range pi.References {
		out = append(out, r.String())
	}
	return out
}

// DeriverName returns the base name of pi's deriver, "" when unknown.
func (pi *PathInfo) DeriverName() string {
	if pi.Deriver.IsZero() {
		return ""
	}
	return pi.Deriver.String()
}

// PathInfoFromNames builds a PathInfo from the fields formats carry,
// checking each is well-formed: path, references and deriver (unless
// empty) are base names, narHash is 32 bytes, narSize is not zero. It says
// nothing about whether the info is true.
func PathInfoFromNames(path string, narHash []byte, narSize uint64, refs []string, deriver string) (*PathInfo, error) {
	p, err := ParseBase(path)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	pi := &PathInfo{Path: p, NarSize: narSize}
	if len(narHash) != len(pi.NarHash) || narSize == 0 {
		return nil, fmt.Errorf("%s: bad narHash or narSize", path)
	}
	pi.NarHash = Hash(narHash)
	for _, r := range refs {
		ref, err := ParseBase(r)
		if err != nil {
			return nil, fmt.Errorf("%s: reference: %w", path, err)
		}
		pi.References = append(pi.References, ref)
	}
	if deriver != "" {
		if pi.Deriver, err = ParseBase(deriver); err != nil {
			return nil, fmt.Errorf("%s: deriver: %w", path, err)
		}
	}
	return pi, nil
}

// SortRefs sorts and de-duplicates references.
func SortRefs(refs []Path) []Path {
	refs = slices.Clone(refs)
	slices.SortFunc(refs, Path.Compare)
	return slices.Compact(refs)
}

// ContentAddressed reports whether pi claims a recursive sha256 content
// address ("fixed:r:sha256:…") equal to its narHash, from which its store
// path recomputes. Such a path needs no signature to be believed: AddNAR
// checks the NAR against that hash, so its name vouches for its content.
func (pi *PathInfo) ContentAddressed(storeDir string) bool {
	h, want, ok, err := pi.CAPath(storeDir)
	return ok && err == nil && h == pi.NarHash && want == pi.Path
}

// CAPath reads a "fixed:r:sha256:" content address: its hash and the
// store path it implies for pi's name and references. ok is false for any
// other kind of CA (which the NAR alone cannot check).
func (pi *PathInfo) CAPath(storeDir string) (h Hash, want Path, ok bool, err error) {
	rest, ok := strings.CutPrefix(pi.CA, "fixed:r:")
	if !ok {
		return h, want, false, nil
	}
	if h, err = ParseHash(rest); err != nil {
		return h, want, true, fmt.Errorf("bad CA %q: %w", pi.CA, err)
	}
	var refs []Path
	self := false
	for _, r := range pi.References {
		if r == pi.Path {
			self = true
		} else {
			refs = append(refs, r)
		}
	}
	want, err = MakeSourcePath(storeDir, h, pi.Path.Name, refs, self)
	return h, want, true, err
}
