package trust_test

import (
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/trust"
)

const storeDir = "/nix/store"

// fixture is a trusted key, an untrusted one, and a manifest signed by
// the trusted key that lists lib and app.
type fixture struct {
	keys         *manifest.Keyring
	good, stray  manifest.SecretKey
	lib, app, ca *nix.PathInfo
	m            *manifest.Manifest
}

func path(t testing.TB, s string) nix.Path {
	t.Helper()
	p, err := nix.ParseBase(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	var err error
	if f.keys, err = manifest.LoadKeyring(filepath.Join(t.TempDir(), "trusted-keys")); err != nil {
		t.Fatal(err)
	}
	if f.good, err = manifest.GenerateKey("laptop-1"); err != nil {
		t.Fatal(err)
	}
	if f.stray, err = manifest.GenerateKey("stranger-1"); err != nil {
		t.Fatal(err)
	}
	if err := f.keys.Add(f.good.Public(), "laptop"); err != nil {
		t.Fatal(err)
	}
	f.lib = &nix.PathInfo{Path: path(t, "0c1qz1bxfr6r6jkpwlmfxz5b7ygixmf6-lib"), NarHash: sha256.Sum256([]byte("lib")),
		NarSize: 128, Deriver: path(t, "1d3sbz9bg7j2rnlbysqfm8bjdiyxqdkh-lib.drv"), ChunkIndex: chunk.Sum([]byte("lib index"))}
	f.app = &nix.PathInfo{Path: path(t, "2hqk8y4pnfc3ry4vg5i4y9g3pgl9d0a2-app"), NarHash: sha256.Sum256([]byte("app")),
		NarSize: 256, References: []nix.Path{f.lib.Path}, ChunkIndex: chunk.Sum([]byte("app index"))}
	// A source path: its name recomputes from its narHash.
	h := nix.Hash(sha256.Sum256([]byte("source")))
	cap, err := nix.MakeSourcePath(storeDir, h, "source", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	f.ca = &nix.PathInfo{Path: cap, NarHash: h, NarSize: 96, CA: "fixed:r:" + h.String()}
	f.m = &manifest.Manifest{Name: "laptop", Generation: 3, Root: f.app.Path, Created: time.Unix(1700000000, 0),
		Paths: []*nix.PathInfo{clone(f.lib), clone(f.app)}}
	if err := f.m.Sign(f.good); err != nil {
		t.Fatal(err)
	}
	return f
}

func clone(pi *nix.PathInfo) *nix.PathInfo {
	c := *pi
	return &c
}

func sign(pi *nix.PathInfo, keys ...manifest.SecretKey) *nix.PathInfo {
	c := clone(pi)
	for _, k := range keys {
		c.Sigs = append(c.Sigs, k.Sign(c.Fingerprint(storeDir)))
	}
	return c
}

func TestBelieve(t *testing.T) {
	f := newFixture(t)
	withManifest := func(tr *trust.Trust) {
		if err := tr.Vouch(f.m); err != nil {
			t.Fatal(err)
		}
	}
	altered := func(pi *nix.PathInfo, edit func(*nix.PathInfo)) *nix.PathInfo {
		c := clone(pi)
		edit(c)
		return c
	}
	for _, tc := range []struct {
		name   string
		setup  func(*trust.Trust)
		info   *nix.PathInfo
		reason trust.Reason // 0: believed
		field  string
		says   string // in the message
	}{
		{"signed by a trusted key", nil, sign(f.lib, f.good), 0, "", ""},
		{"signed by an untrusted and a trusted key", nil, sign(f.lib, f.stray, f.good), 0, "", ""},
		{"content-addressed", nil, f.ca, 0, "", ""},
		{"listed by a signed manifest", withManifest, f.app, 0, "", ""},
		{"listed by a manifest, without a chunk index (a bundle's)", withManifest, altered(f.app, func(pi *nix.PathInfo) { pi.ChunkIndex = chunk.ID{} }), 0, "", ""},
		{"anything, believing all", func(tr *trust.Trust) { tr.BelieveAll = true }, f.lib, 0, "", ""},

		{"no signature", nil, f.lib, trust.NoSignature, "", "no signature"},
		{"signed by an untrusted key", nil, sign(f.lib, f.stray), trust.UnknownKey, "", "stranger-1"},
		{"a trusted key's signature over other contents", nil,
			altered(sign(f.lib, f.good), func(pi *nix.PathInfo) { pi.NarSize++ }), trust.BadSignature, "", "does not match"},
		{"a trusted key's signature over other references", nil,
			altered(sign(f.app, f.good), func(pi *nix.PathInfo) { pi.References = nil }), trust.BadSignature, "", "laptop-1"},
		{"a content address that does not recompute", nil,
			altered(f.ca, func(pi *nix.PathInfo) { pi.Path.Name = "other" }), trust.BadContentAddress, "", "content address"},
		{"a malformed content address", nil,
			altered(f.ca, func(pi *nix.PathInfo) { pi.CA = "fixed:r:sha256:nonsense" }), trust.BadContentAddress, "", "bad CA"},
		{"a content address that is not the narHash", nil,
			altered(f.ca, func(pi *nix.PathInfo) { pi.NarHash[0] ^= 1 }), trust.BadContentAddress, "", "content address"},
		{"manifest disagrees: name", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.Path.Name = "lob" }), trust.Disagrees, "name", "laptop@3"},
		{"manifest disagrees: narHash", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.NarHash[0] ^= 1 }), trust.Disagrees, "narHash", "differs from the signed manifest"},
		{"manifest disagrees: narSize", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.NarSize++ }), trust.Disagrees, "narSize", ""},
		{"manifest disagrees: references", withManifest, altered(f.app, func(pi *nix.PathInfo) { pi.References = nil }), trust.Disagrees, "references", ""},
		{"manifest disagrees: deriver", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.Deriver = nix.Path{} }), trust.Disagrees, "deriver", ""},
		{"manifest disagrees: CA", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.CA = "text:sha256:x" }), trust.Disagrees, "CA", ""},
		{"manifest disagrees: chunk index", withManifest, altered(f.lib, func(pi *nix.PathInfo) { pi.ChunkIndex[0] ^= 1 }), trust.Disagrees, "chunk index", ""},
		{"manifest disagrees, though a trusted key signed it", withManifest,
			sign(altered(f.lib, func(pi *nix.PathInfo) { pi.NarSize++ }), f.good), trust.Disagrees, "narSize", ""},
		{"manifest disagrees, believing all", func(tr *trust.Trust) { withManifest(tr); tr.BelieveAll = true },
			altered(f.lib, func(pi *nix.PathInfo) { pi.NarSize++ }), trust.Disagrees, "narSize", ""},
		{"one of two vouchers disagrees", func(tr *trust.Trust) {
			tr.VouchFor(f.lib, "")
			tr.VouchFor(altered(f.lib, func(pi *nix.PathInfo) { pi.NarSize++ }), "")
		}, f.lib, trust.Disagrees, "narSize", "the signed manifest (its narSize)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := trust.New(storeDir, f.keys)
			if tc.setup != nil {
				tc.setup(tr)
			}
			err := tr.Believe(tc.info)
			if tc.reason == 0 {
				if err != nil {
					t.Fatalf("not believed: %v", err)
				}
				return
			}
			var ue *trust.UntrustedError
			if !errors.As(err, &ue) || !errors.Is(err, trust.ErrUntrusted) {
				t.Fatalf("got %v, want an *UntrustedError", err)
			}
			if ue.Reason != tc.reason || ue.Field != tc.field {
				t.Fatalf("reason %v, field %q; want %v, %q (%v)", ue.Reason, ue.Field, tc.reason, tc.field, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tc.info.Path.Abs(storeDir)+": ") || !strings.Contains(msg, tc.says) {
				t.Fatalf("message %q: want the path first and %q", msg, tc.says)
			}
		})
	}
}

func TestBelieveWithoutKeys(t *testing.T) {
	f := newFixture(t)
	tr := trust.New(storeDir, nil)
	if err := tr.Believe(f.ca); err != nil {
		t.Fatalf("a content-addressed path needs no key: %v", err)
	}
	var ue *trust.UntrustedError
	if err := tr.Believe(sign(f.lib, f.good)); !errors.As(err, &ue) || ue.Reason != trust.UnknownKey {
		t.Fatalf("got %v, want UnknownKey", err)
	}
	if err := tr.Vouch(f.m); !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("a manifest vouched with no trusted keys: %v", err)
	}
}

func TestVouchRequiresATrustedPublisher(t *testing.T) {
	f := newFixture(t)
	m := *f.m
	if err := m.Sign(f.stray); err != nil {
		t.Fatal(err)
	}
	tr := trust.New(storeDir, f.keys)
	if err := tr.Vouch(&m); !errors.Is(err, manifest.ErrUntrustedPublisher) {
		t.Fatalf("got %v, want ErrUntrustedPublisher", err)
	}
	if len(tr.Vouchers(f.lib.Path.Hash)) != 0 {
		t.Fatal("an untrusted manifest vouches")
	}
	if err := tr.Believe(f.lib); !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("believed through an untrusted manifest: %v", err)
	}
}

// TestReasonsHaveNames: every reason prints as words, for logs.
func TestReasonsHaveNames(t *testing.T) {
	for r := trust.NoSignature; r <= trust.BadContentAddress; r++ {
		if strings.HasPrefix(r.String(), "Reason(") {
			t.Errorf("reason %d has no name", int(r))
		}
	}
}
