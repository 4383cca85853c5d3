package trust

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
)

// ErrUntrusted is what every *UntrustedError is (errors.Is): a PathInfo
// that nothing trusted vouches for.
var ErrUntrusted = errors.New("not vouched for by anything trusted")

// Reason says why a PathInfo is not believed.
type Reason int

const (
	// NoSignature: no manifest lists it, it has no signature and it is not
	// content-addressed.
	NoSignature Reason = iota + 1
	// UnknownKey: it is signed, but by no trusted key (Signers names them).
	UnknownKey
	// BadSignature: a trusted key's name signed it, but the signature does
	// not verify: the info was altered (or the signature is corrupt).
	BadSignature
	// Disagrees: a signed manifest lists the path with other contents
	// (Field says which, Manifest which manifest).
	Disagrees
	// BadContentAddress: it claims a content address from which its store
	// path does not recompute, and nothing else vouches for it.
	BadContentAddress
)

func (r Reason) String() string {
	switch r {
	case NoSignature:
		return "no signature"
	case UnknownKey:
		return "signed by an untrusted key"
	case BadSignature:
		return "bad signature"
	case Disagrees:
		return "disagrees with a signed manifest"
	case BadContentAddress:
		return "content address does not recompute"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// UntrustedError says why a PathInfo is not believed.
type UntrustedError struct {
	Path   string // absolute store path
	Reason Reason
	// Signers are the names of the keys that signed it (UnknownKey), or
	// the trusted key whose signature failed (BadSignature).
	Signers []string
	// Field and Manifest say where a signed manifest disagrees (Disagrees):
	// "name", "narHash", "narSize", "references", "deriver", "CA" or
	// "chunk index"; and "NAME@GEN", or "" when the caller did not say.
	Field, Manifest string
	// Detail is what a bad content address failed on (BadContentAddress).
	Detail string
}

func (e *UntrustedError) Error() string {
	var why string
	switch e.Reason {
	case NoSignature:
		why = "no signed manifest lists it, it has no signature and it is not content-addressed; trust its publisher's key with `trove trust add NAME:KEY`"
	case UnknownKey:
		why = fmt.Sprintf("no trusted key signed it (signed by %v); trust one of them with `trove trust add NAME:KEY`", e.Signers)
	case BadSignature:
		why = fmt.Sprintf("its signature by %s does not match it (its narHash, size or references were altered, or the signature is corrupt)", strings.Join(e.Signers, ", "))
	case Disagrees:
		m := "the signed manifest"
		if e.Manifest != "" {
			m += " " + e.Manifest
		}
		why = fmt.Sprintf("its path info differs from %s (its %s)", m, e.Field)
	case BadContentAddress:
		why = "its content address does not recompute to its path"
		if e.Detail != "" {
			why += " (" + e.Detail + ")"
		}
		why += ", and no trusted key signed it"
	default:
		why = e.Reason.String()
	}
	return e.Path + ": " + ErrUntrusted.Error() + ": " + why
}

// Is makes every UntrustedError match ErrUntrusted.
func (e *UntrustedError) Is(target error) bool { return target == ErrUntrusted }

// Voucher is a PathInfo a verified signed manifest lists.
type Voucher struct {
	Info *nix.PathInfo
	From string // "NAME@GEN", for messages; may be empty
}

// Trust decides which PathInfos are believable. Set it up (New, Vouch,
// VouchFor, BelieveAll) before use; Believe may then be called from many
// goroutines at once.
type Trust struct {
	storeDir string
	keys     *manifest.Keyring // nil: no trusted keys
	vouched  map[nix.PathHash][]Voucher
	// BelieveAll believes every PathInfo that no manifest disagrees with.
	// For tests only (--no-check-sigs): it lets any source make any content
	// valid under any path name.
	BelieveAll bool
}

// New returns a Trust for paths under storeDir that believes signatures
// by the keys in keys (nil for none).
func New(storeDir string, keys *manifest.Keyring) *Trust {
	return &Trust{storeDir: storeDir, keys: keys, vouched: map[nix.PathHash][]Voucher{}}
}

// Vouch makes m vouch for the paths it lists, once the keyring trusts its
// publisher for its name (manifest.Decode already checked the signature
// against that key).
func (t *Trust) Vouch(m *manifest.Manifest) error {
	ref := fmt.Sprintf("%s@%d", m.Name, m.Generation)
	if t.keys == nil {
		return fmt.Errorf("%s: %w: no trusted keys", ref, ErrUntrusted)
	}
	if err := t.keys.VerifyManifest(m); err != nil {
		return err
	}
	for _, pi := range m.Paths {
		t.VouchFor(pi, ref)
	}
	return nil
}

// VouchFor records pi as listed by a verified signed manifest (named from,
// for messages). The caller must have verified that manifest; prefer Vouch.
func (t *Trust) VouchFor(pi *nix.PathInfo, from string) {
	t.vouched[pi.Path.Hash] = append(t.vouched[pi.Path.Hash], Voucher{Info: pi, From: from})
}

// Vouchers returns what the manifests vouched with for the path of hash h.
func (t *Trust) Vouchers(h nix.PathHash) []Voucher { return t.vouched[h] }

// Believe returns nil if pi is believable, else an *UntrustedError.
func (t *Trust) Believe(pi *nix.PathInfo) error {
	untrusted := func(r Reason) *UntrustedError {
		return &UntrustedError{Path: pi.Path.Abs(t.storeDir), Reason: r}
	}
	if vs := t.vouched[pi.Path.Hash]; len(vs) > 0 {
		for _, v := range vs {
			if f := disagreement(v.Info, pi); f != "" {
				e := untrusted(Disagrees)
				e.Field, e.Manifest = f, v.From
				return e
			}
		}
		return nil
	}
	if t.BelieveAll {
		return nil
	}
	if t.keys != nil && len(pi.Sigs) > 0 {
		if _, ok := t.keys.VerifyPathInfo(t.storeDir, pi); ok {
			return nil
		}
	}
	// pi.ContentAddressed, from one CAPath: its detail is the error's.
	caHash, caPath, isCA, caErr := pi.CAPath(t.storeDir)
	if isCA && caErr == nil && caHash == pi.NarHash && caPath == pi.Path {
		return nil
	}
	// Not believed: say why.
	var keys []manifest.PublicKey
	if t.keys != nil {
		keys = t.keys.Keys()
	}
	signers := make([]string, len(pi.Sigs))
	for i, s := range pi.Sigs {
		signers[i], _, _ = strings.Cut(s, ":")
	}
	for _, k := range keys {
		if slices.Contains(signers, k.Name) {
			e := untrusted(BadSignature)
			e.Signers = []string{k.Name}
			return e
		}
	}
	if isCA {
		e := untrusted(BadContentAddress)
		if caErr != nil {
			e.Detail = caErr.Error()
		}
		return e
	}
	if len(pi.Sigs) == 0 {
		return untrusted(NoSignature)
	}
	e := untrusted(UnknownKey)
	e.Signers = signers
	return e
}

// disagreement names the first field a manifest carries on which got
// differs from its info v, or "". The chunk index ID is compared only when
// got carries one: a bundle's infos do not (the importer chunks the NAR).
func disagreement(v, got *nix.PathInfo) string {
	switch {
	case v.Path != got.Path:
		return "name"
	case v.NarHash != got.NarHash:
		return "narHash"
	case v.NarSize != got.NarSize:
		return "narSize"
	case !slices.Equal(v.References, got.References):
		return "references"
	case v.Deriver != got.Deriver:
		return "deriver"
	case v.CA != got.CA:
		return "CA"
	case got.ChunkIndex != (chunk.ID{}) && v.ChunkIndex != got.ChunkIndex:
		return "chunk index"
	}
	return ""
}
