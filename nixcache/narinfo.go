package nixcache

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/trove-p2p/trove/nix"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// MaxNarInfoSize bounds a narinfo: a closure root with thousands of
// references fits many times over.
const MaxNarInfoSize = 1 << 20

// NarInfo is a parsed .narinfo: what a binary cache says about one store
// path, and where its NAR is.
type NarInfo struct {
	// Info holds StorePath, NarHash, NarSize, References (sorted), Deriver,
	// Sig and CA. Its other fields are zero.
	Info nix.PathInfo
	// URL is the NAR's location: a clean relative path (with an optional
	// query) or an absolute http(s) URL.
	URL string
	// Compression is one of Nix's names; never empty (absent means bzip2,
	// as in Nix).
	Compression string
	FileHash    nix.Hash // of the file at URL; zero when absent
	FileSize    uint64   // of the file at URL; 0 when absent
	System      string
}

// ErrBadNarInfo is wrapped by every narinfo parse error.
var ErrBadNarInfo = errors.New("malformed narinfo")

// compressions are the values of Compression Nix knows.
var compressions = []string{"none", "xz", "bzip2", "zstd", "br", "gzip", "lzip", "lz4"}

// ParseNarInfo parses a narinfo strictly, for a store whose directory is
// storeDir. It takes Nix's format ("Key: value" lines) and refuses what
// Nix would misread or what makes no sense: missing StorePath, URL, NarHash
// or NarSize, a NarSize of 0, a repeated field (Sig excepted), malformed
// hashes, sizes, store paths, signatures, content addresses or URLs, control
// characters, blank lines, and FileHash/FileSize that differ from
// NarHash/NarSize when Compression is none. Unknown fields are ignored, as
// Nix ignores them. Errors wrap ErrBadNarInfo and name the line and field.
func ParseNarInfo(storeDir string, b []byte) (*NarInfo, error) {
	if len(b) > MaxNarInfoSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrBadNarInfo, len(b), MaxNarInfoSize)
	}
	text, ok := strings.CutSuffix(string(b), "\n")
	if !ok && text == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadNarInfo)
	}
	ni := &NarInfo{}
	seen := map[string]int{} // field → line it was first on
	sigs := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			if line == "" {
				return nil, badLine(n, "", "blank line")
			}
			return nil, badLine(n, "", "want \"Key: value\", got %s", quote(line))
		}
		if !validKey(key) {
			return nil, badLine(n, "", "field name %s: want letters and digits", quote(key))
		}
		if i := strings.IndexFunc(val, isControl); i >= 0 {
			return nil, badLine(n, key, "control character %q in the value", val[i])
		}
		if key != "Sig" && known(key) {
			if first, dup := seen[key]; dup {
				return nil, badLine(n, key, "repeated (first on line %d)", first)
			}
			seen[key] = n
		}
		var err error
		switch key {
		case "StorePath":
			ni.Info.Path, err = nix.ParsePath(storeDir, val)
		case "URL":
			err = checkURL(val)
			ni.URL = val
		case "Compression":
			if !slices.Contains(compressions, val) {
				err = fmt.Errorf("%s: want one of %s", quote(val), strings.Join(compressions, ", "))
			}
			ni.Compression = val
		case "FileHash":
			ni.FileHash, err = parseHash(val)
		case "FileSize":
			ni.FileSize, err = parseSize(val)
		case "NarHash":
			ni.Info.NarHash, err = parseHash(val)
		case "NarSize":
			ni.Info.NarSize, err = parseSize(val)
			if err == nil && ni.Info.NarSize == 0 {
				err = errors.New("0: a NAR is never empty")
			}
		case "References":
			ni.Info.References, err = parseRefs(val)
		case "Deriver":
			if val != "unknown-deriver" {
				ni.Info.Deriver, err = nix.ParseBase(val)
			}
		case "System":
			if val == "" || strings.Contains(val, " ") {
				err = fmt.Errorf("%s: want a system name like x86_64-linux", quote(val))
			}
			ni.System = val
		case "Sig":
			err = checkSig(val)
			if err == nil && !sigs[val] { // Nix keeps a set
				sigs[val] = true
				ni.Info.Sigs = append(ni.Info.Sigs, val)
			}
		case "CA":
			if val != "" { // Nix takes a blank CA as none
				err = checkCA(val)
			}
			ni.Info.CA = val
		}
		if err != nil {
			return nil, badLine(n, key, "%v", err)
		}
	}
	for _, key := range []string{"StorePath", "URL", "NarHash", "NarSize"} {
		if _, ok := seen[key]; !ok {
			return nil, fmt.Errorf("%w: no %s field", ErrBadNarInfo, key)
		}
	}
	if ni.Compression == "" {
		ni.Compression = "bzip2"
	}
	if ni.Compression == "none" {
		if !ni.FileHash.IsZero() && ni.FileHash != ni.Info.NarHash {
			return nil, fmt.Errorf("%w: Compression is none but FileHash %s differs from NarHash %s", ErrBadNarInfo, ni.FileHash, ni.Info.NarHash)
		}
		if ni.FileSize != 0 && ni.FileSize != ni.Info.NarSize {
			return nil, fmt.Errorf("%w: Compression is none but FileSize %d differs from NarSize %d", ErrBadNarInfo, ni.FileSize, ni.Info.NarSize)
		}
	}
	return ni, nil
}

// Encode writes ni in Nix's format and field order. ParseNarInfo reads it
// back unchanged.
func (ni *NarInfo) Encode(storeDir string) []byte {
	var b strings.Builder
	field := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	field("StorePath", ni.Info.Path.Abs(storeDir))
	field("URL", ni.URL)
	field("Compression", ni.Compression)
	if !ni.FileHash.IsZero() {
		field("FileHash", ni.FileHash.String())
	}
	if ni.FileSize != 0 {
		field("FileSize", strconv.FormatUint(ni.FileSize, 10))
	}
	field("NarHash", ni.Info.NarHash.String())
	field("NarSize", strconv.FormatUint(ni.Info.NarSize, 10))
	refs := make([]string, len(ni.Info.References))
	for i, r := range ni.Info.References {
		refs[i] = r.String()
	}
	slices.Sort(refs)
	field("References", strings.Join(refs, " ")) // "References: " when none, as Nix writes it
	if !ni.Info.Deriver.IsZero() {
		field("Deriver", ni.Info.Deriver.String())
	}
	if ni.System != "" {
		field("System", ni.System)
	}
	for _, s := range ni.Info.Sigs {
		field("Sig", s)
	}
	if ni.Info.CA != "" {
		field("CA", ni.Info.CA)
	}
	return []byte(b.String())
}

func badLine(n int, key, format string, a ...any) error {
	where := fmt.Sprintf("line %d", n)
	if key != "" {
		where += " (" + key + ")"
	}
	return fmt.Errorf("%w: %s: %s", ErrBadNarInfo, where, fmt.Sprintf(format, a...))
}

// quote shows a value from outside in an error, cut to a readable length.
func quote(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "..."
	}
	return strconv.Quote(s)
}

func known(key string) bool {
	switch key {
	case "StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize",
		"References", "Deriver", "System", "Sig", "CA":
		return true
	}
	return false
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// parseHash takes a SHA-256 hash in any form Nix writes one, prefixed with
// its algorithm (as Nix's parseAnyPrefixed requires).
func parseHash(s string) (nix.Hash, error) {
	return nix.ParseHash(s)
}

// parseSize takes a decimal number without sign or leading zeros.
func parseSize(s string) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("%s: want a decimal number", quote(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: too large", quote(s))
	}
	return n, nil
}

// parseRefs takes space-separated base names, each once; "" is none.
func parseRefs(s string) ([]nix.Path, error) {
	if s == "" {
		return nil, nil
	}
	var refs []nix.Path
	for _, f := range strings.Split(s, " ") {
		if f == "" {
			return nil, errors.New("want base names separated by single spaces")
		}
		p, err := nix.ParseBase(f)
		if err != nil {
			return nil, err
		}
		refs = append(refs, p)
	}
	slices.SortFunc(refs, nix.Path.Compare)
	for i := 1; i < len(refs); i++ {
		if refs[i] == refs[i-1] {
			return nil, fmt.Errorf("%s is listed twice", refs[i])
		}
	}
	return refs, nil
}

// checkSig takes Nix's "name:base64(64-byte ed25519 signature)".
func checkSig(s string) error {
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("%s: want NAME:BASE64", quote(s))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b) != 64 {
		return fmt.Errorf("signature by %s: want 64 bytes of base64 after the key name", quote(name))
	}
	return nil
}

// digestSizes are the hash algorithms a content address may use.
var digestSizes = map[string]int{"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}

// checkCA takes Nix's content addresses: "text:sha256:<digest>" and
// "fixed:[r:]<algo>:<digest>", the digest in nix32, hex or base64.
func checkCA(s string) error {
	method, rest, _ := strings.Cut(s, ":")
	var algo, digest string
	switch method {
	case "text":
		algo, digest, _ = strings.Cut(rest, ":")
		if algo != "sha256" {
			return fmt.Errorf("%s: a text content address uses sha256", quote(s))
		}
	case "fixed":
		rest, _ = strings.CutPrefix(rest, "r:")
		algo, digest, _ = strings.Cut(rest, ":")
	default:
		return fmt.Errorf("%s: want text:sha256:HASH or fixed:[r:]ALGO:HASH", quote(s))
	}
	size, ok := digestSizes[algo]
	if !ok {
		return fmt.Errorf("%s: unknown hash algorithm %s", quote(s), quote(algo))
	}
	var err error
	switch len(digest) {
	case nixbase32.EncodedLen(size):
		_, err = nixbase32.DecodeString(digest)
	case hex.EncodedLen(size):
		_, err = hex.DecodeString(digest)
	case base64.StdEncoding.EncodedLen(size):
		_, err = base64.StdEncoding.Strict().DecodeString(digest)
	default:
		err = fmt.Errorf("%d characters", len(digest))
	}
	if err != nil {
		return fmt.Errorf("%s: not a %s digest in nix32, hex or base64: %v", quote(s), algo, err)
	}
	return nil
}

// checkURL takes what a NAR URL may be: an absolute http(s) URL, or a
// relative path of clean segments, optionally with a query (harmonia adds
// one). Nothing that climbs out of the cache ("..", a leading "/") or that
// names another scheme (file:) gets through.
func checkURL(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || strings.ContainsAny(s, " \\") {
			return fmt.Errorf("%s: not a valid http(s) URL", quote(s))
		}
		return nil
	}
	p, query, hasQuery := strings.Cut(s, "?")
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%s: want a relative path of plain names (no empty, . or .. parts) or an http(s) URL", quote(s))
		}
		if i := strings.IndexFunc(seg, func(r rune) bool { return !urlChar(r) }); i >= 0 {
			return fmt.Errorf("%s: character %q is not allowed in a relative NAR URL", quote(s), seg[i])
		}
	}
	if hasQuery {
		if i := strings.IndexFunc(query, func(r rune) bool { return !urlChar(r) && r != '&' && r != '/' && r != '%' }); i >= 0 {
			return fmt.Errorf("%s: character %q is not allowed in the query", quote(s), query[i])
		}
	}
	return nil
}

func urlChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '.' || r == '-' || r == '_' || r == '+' || r == '=' || r == '~'
}
