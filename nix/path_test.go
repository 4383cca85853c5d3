package nix

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
)

const (
	helloBase  = "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
	helloHash  = "i9pmrzmpshapij2kin22pff6fc2adavx"
	helloNAR32 = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
	helloNARHx = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"hello", true},
		{"hello-2.12.1", true},
		{"a", true},
		{"A+-._?=z09", true},
		{"-leading-dash", true},
		{"+", true},
		{"trailing.", true},
		{"p2p-leaf.drv", true},
		{strings.Repeat("a", 211), true},
		{strings.Repeat("a", 212), false},
		{strings.Repeat("a", 1000), false},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", true}, // Nix 2.8: nix-store --add .hidden works
		{"..hidden", true},
		{".-", false},
		{"..-x", false},
		{"with space", false},
		{"slash/in", false},
		{"colon:", false},
		{"tilde~", false},
		{"star*", false},
		{"at@", false},
		{"comma,", false},
		{"newline\n", false},
		{"nul\x00", false},
		{"é", false},
		{"\xff", false},
		{"semi;", false},
		{"hash#", false},
		{"pct%", false},
	} {
		err := CheckName(tc.name)
		if tc.ok && err != nil {
			t.Errorf("CheckName(%.20q) = %v, want ok", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckName(%.20q) = %v, want ErrInvalidName", tc.name, err)
		}
	}
}

func TestParsePathHash(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{helloHash, true},
		{"00000000000000000000000000000000", true},
		{"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", true},
		{helloHash[:31], false},
		{helloHash + "0", false},
		{"", false},
		{strings.Replace(helloHash, "i", "e", 1), false}, // e, o, u, t are not in the alphabet
		{strings.Replace(helloHash, "i", "o", 1), false},
		{strings.Replace(helloHash, "i", "u", 1), false},
		{strings.Replace(helloHash, "i", "t", 1), false},
		{strings.ToUpper(helloHash), false},
		{strings.Replace(helloHash, "i", "-", 1), false},
	} {
		h, err := ParsePathHash(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParsePathHash(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && h.String() != tc.in {
			t.Errorf("ParsePathHash(%q).String() = %q", tc.in, h.String())
		}
	}
}

func TestParseBase(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string // "" means an error
	}{
		{helloBase, "hello.txt"},
		{helloHash + "-a", "a"},
		{helloHash + "-p2p-leaf.drv", "p2p-leaf.drv"},
		{helloHash + "-" + strings.Repeat("n", 211), strings.Repeat("n", 211)},
		{helloHash + "-" + strings.Repeat("n", 212), ""},
		{helloHash + "-", ""},
		{helloHash, ""},
		{helloHash + "_hello", ""},
		{helloHash[:31] + "-hello", ""},
		{"e" + helloHash[1:] + "-hello", ""},
		{helloHash + "-.-hidden", ""},
		{helloHash + "-bad name", ""},
		{helloHash + "-sub/dir", ""},
		{"", ""},
		{"-hello", ""},
	} {
		p, err := ParseBase(tc.in)
		if tc.name == "" {
			if err == nil {
				t.Errorf("ParseBase(%.50q) = %v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseBase(%.50q): %v", tc.in, err)
			continue
		}
		if p.Name != tc.name || p.Hash.String() != tc.in[:32] || p.String() != tc.in || p.IsZero() {
			t.Errorf("ParseBase(%.50q) = %+v", tc.in, p)
		}
	}
}

func TestParsePath(t *testing.T) {
	hello, err := ParseBase(helloBase)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		storeDir, in  string
		strict, loose bool // accepted by ParsePath, by ParsePathLoose
	}{
		{DefaultStoreDir, "/nix/store/" + helloBase, true, true},
		{DefaultStoreDir, "/nix/store/" + helloBase + "/bin/sh", false, true},
		{DefaultStoreDir, "/nix/store/" + helloBase + "/", false, true},
		{DefaultStoreDir, helloBase, false, true},
		{"/other/store", "/other/store/" + helloBase, true, true},
		{"/other/store", "/nix/store/" + helloBase, false, false},
		{DefaultStoreDir, "/other/store/" + helloBase, false, false},
		{DefaultStoreDir, "/nix/storex/" + helloBase, false, false},
		{DefaultStoreDir, "/nix/" + helloBase, false, false},
		{DefaultStoreDir, "nix/store/" + helloBase, false, false},
		{DefaultStoreDir, "/nix/store//" + helloBase, false, false},
		{DefaultStoreDir, "/nix/store/./" + helloBase, false, false},
		{DefaultStoreDir, "/nix/store/../store/" + helloBase, false, false},
		{DefaultStoreDir, "/nix/store/sub/" + helloBase, false, false},
		{DefaultStoreDir, "./" + helloBase, false, false},
		{DefaultStoreDir, "/nix/store", false, false},
		{DefaultStoreDir, "/nix/store/", false, false},
		{DefaultStoreDir, "/nix/store/..", false, false},
		{DefaultStoreDir, "/nix/store/" + helloHash, false, false},
		{DefaultStoreDir, "/nix/store/" + helloHash + "-bad name", false, false},
		{DefaultStoreDir, "", false, false},
	} {
		p, err := ParsePath(tc.storeDir, tc.in)
		if tc.strict != (err == nil) || (err == nil && p != hello) {
			t.Errorf("ParsePath(%q, %q) = %v, %v; want ok=%v", tc.storeDir, tc.in, p, err, tc.strict)
		}
		p, err = ParsePathLoose(tc.storeDir, tc.in)
		if tc.loose != (err == nil) || (err == nil && p != hello) {
			t.Errorf("ParsePathLoose(%q, %q) = %v, %v; want ok=%v", tc.storeDir, tc.in, p, err, tc.loose)
		}
	}
	if got := hello.Abs("/other/store"); got != "/other/store/"+helloBase {
		t.Errorf("Abs = %q", got)
	}
	if !(Path{}).IsZero() {
		t.Error("zero Path is not IsZero")
	}
	other, _ := ParseBase(helloHash + "-hello.txu")
	if hello.Compare(other) >= 0 || other.Compare(hello) <= 0 || hello.Compare(hello) != 0 {
		t.Error("Compare does not order by the textual path")
	}
}

func TestParseHash(t *testing.T) {
	want := mustHex(t, helloNARHx)
	raw, _ := hex.DecodeString(helloNARHx)
	b64 := base64.StdEncoding.EncodeToString(raw)
	for _, in := range []string{
		"sha256:" + helloNAR32,
		"sha256:" + helloNARHx,
		"sha256:" + strings.ToUpper(helloNARHx),
		"sha256:" + b64,
		"sha256-" + b64,
	} {
		h, err := ParseHash(in)
		if err != nil || h != want {
			t.Errorf("ParseHash(%q) = %v, %v; want %v", in, h, err, want)
		}
	}
	if want.String() != "sha256:"+helloNAR32 || want.Hex() != helloNARHx || want.SRI() != "sha256-"+b64 || want.IsZero() || !(Hash{}).IsZero() {
		t.Errorf("renderings of %x: %s %s %s", want[:], want, want.Hex(), want.SRI())
	}

	// A nix32 digest of 32 bytes has 4 spare bits in its first character;
	// Nix refuses them set.
	overflow := "2" + helloNAR32[1:]
	ones := mustHex(t, strings.Repeat("ff", 32))
	for _, in := range []string{
		"",
		"sha256:",
		"sha256-",
		helloNAR32,
		"sha256" + helloNAR32,
		"SHA256:" + helloNAR32,
		"sha1:" + helloNAR32,
		"md5:" + helloNAR32,
		"sha512:" + helloNAR32,
		"sha512-" + b64,
		"sha256:" + helloNAR32[:51],
		"sha256:" + helloNAR32 + "0",
		"sha256:" + overflow,
		"sha256:" + strings.Replace(helloNAR32, "w", "e", 1),
		"sha256:" + strings.ToUpper(helloNAR32),
		"sha256:" + helloNARHx[:63],
		"sha256:" + helloNARHx[:63] + "g",
		"sha256:" + b64[:43] + "x", // 44 characters, not base64 of 32 bytes
		"sha256-" + b64[:43],
		"sha256-" + b64 + "=",
		"sha256-" + b64[:42] + "x=", // non-zero trailing bits
		"sha256-" + base64.StdEncoding.EncodeToString(raw[:31]),
		"sha256-" + base64.StdEncoding.EncodeToString(append(raw, 0)),
		"sha256-" + base64.URLEncoding.EncodeToString(ones[:]),
		"sha256-" + b64[:20] + "\n" + b64[20:],
		"sha256-" + b64[:20] + "\r" + b64[20:],
		"sha256:" + b64[:20] + "\n" + b64[21:],
		" sha256:" + helloNAR32,
		"sha256:" + helloNAR32 + " ",
	} {
		if h, err := ParseHash(in); err == nil {
			t.Errorf("ParseHash(%q) = %v, want an error", in, h)
		}
	}
	if _, err := ParseHash("sha256:" + strings.Repeat("1", 52)); err != nil {
		t.Errorf("a nix32 digest with only the low bit of the spare ones set is refused: %v", err)
	}
}

// FuzzParsePath: the parsers of store paths and hashes never panic, and what
// they accept renders back to the same text.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		helloBase,
		"/nix/store/" + helloBase,
		"/nix/store/" + helloBase + "/bin/hello",
		helloHash,
		helloHash + "-.x",
		"sha256:" + helloNAR32,
		"sha256:" + helloNARHx,
		"sha256:HBw30a9L2bXc3Jb4w9NDmJwa/nsYNWe/CJZLL9AXH8E=",
		"sha256-HBw30a9L2bXc3Jb4w9NDmJwa/nsYNWe/CJZLL9AXH8E=",
		"sha256:2" + helloNAR32[1:],
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParseBase(s); err == nil {
			if p.String() != s || CheckName(p.Name) != nil {
				t.Fatalf("ParseBase(%q) = %q", s, p)
			}
		}
		if h, err := ParsePathHash(s); err == nil && h.String() != s {
			t.Fatalf("ParsePathHash(%q).String() = %q", s, h)
		}
		if p, err := ParsePath(DefaultStoreDir, s); err == nil && p.Abs(DefaultStoreDir) != s {
			t.Fatalf("ParsePath(%q).Abs() = %q", s, p.Abs(DefaultStoreDir))
		}
		if p, err := ParsePathLoose(DefaultStoreDir, s); err == nil {
			abs := p.Abs(DefaultStoreDir)
			if s != p.String() && s != abs && !strings.HasPrefix(s, abs+"/") {
				t.Fatalf("ParsePathLoose(%q) = %q, which %q is not in", s, abs, s)
			}
		}
		h, err := ParseHash(s)
		if err != nil {
			return
		}
		if h2, err := ParseHash(h.String()); err != nil || h2 != h {
			t.Fatalf("ParseHash(%q) = %v, which does not parse back: %v, %v", s, h, h2, err)
		}
		// Each accepted form is the canonical rendering in that form
		// (hex may be upper case).
		body, sri := strings.CutPrefix(s, "sha256-")
		if !sri {
			body = strings.TrimPrefix(s, "sha256:")
		}
		var canon string
		switch {
		case sri:
			canon = strings.TrimPrefix(h.SRI(), "sha256-")
		case len(body) == 52:
			canon = strings.TrimPrefix(h.String(), "sha256:")
		case len(body) == 64:
			canon, body = h.Hex(), strings.ToLower(body)
		default:
			canon = base64.StdEncoding.EncodeToString(h[:])
		}
		if body != canon {
			t.Fatalf("ParseHash accepted %q as %v; the canonical form is %q", s, h, canon)
		}
	})
}

// TestPathInfoFromNames: the one conversion formats use to read a
// PathInfo round-trips what RefNames and DeriverName write, and refuses
// each malformed field.
func TestPathInfoFromNames(t *testing.T) {
	other := helloHash[:31] + "a-dep"
	hash := make([]byte, 32)
	hash[0] = 7
	for _, tc := range []struct {
		name    string
		path    string
		narHash []byte
		narSize uint64
		refs    []string
		deriver string
		ok      bool
	}{
		{"minimal", helloBase, hash, 1, nil, "", true},
		{"refs and deriver", helloBase, hash, 99, []string{other, helloBase}, helloHash + "-hello.drv", true},
		{"bad path", "hello", hash, 1, nil, "", false},
		{"short hash", helloBase, hash[:31], 1, nil, "", false},
		{"zero size", helloBase, hash, 0, nil, "", false},
		{"bad reference", helloBase, hash, 1, []string{"/nix/store/" + other}, "", false},
		{"bad deriver", helloBase, hash, 1, nil, "x.drv", false},
	} {
		pi, err := PathInfoFromNames(tc.path, tc.narHash, tc.narSize, tc.refs, tc.deriver)
		if !tc.ok {
			if err == nil {
				t.Errorf("%s: accepted: %+v", tc.name, pi)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if pi.Path.String() != tc.path || !bytes.Equal(pi.NarHash[:], tc.narHash) || pi.NarSize != tc.narSize ||
			!slices.Equal(pi.RefNames(), tc.refs) || pi.DeriverName() != tc.deriver {
			t.Errorf("%s: got %+v, refs %v, deriver %q", tc.name, pi, pi.RefNames(), pi.DeriverName())
		}
	}
}
