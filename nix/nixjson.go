package nix

import (
	"fmt"
	"time"
)

// NixPathInfo is one entry of `nix path-info --json` (Nix 2.8), the format
// `trove path-info --json` also prints.
type NixPathInfo struct {
	Path             string   `json:"path"`
	NarHash          string   `json:"narHash"`
	NarSize          uint64   `json:"narSize"`
	References       []string `json:"references"`
	CA               string   `json:"ca,omitempty"`
	ClosureSize      uint64   `json:"closureSize,omitempty"`
	Deriver          string   `json:"deriver,omitempty"`
	RegistrationTime int64    `json:"registrationTime,omitempty"`
	Ultimate         bool     `json:"ultimate,omitempty"`
	Signatures       []string `json:"signatures,omitempty"`
}

// ToNix renders pi as `nix path-info --json` does.
func (pi *PathInfo) ToNix(storeDir string) NixPathInfo {
	n := NixPathInfo{
		Path: pi.Path.Abs(storeDir), NarHash: pi.NarHash.SRI(), NarSize: pi.NarSize,
		References: []string{}, RegistrationTime: pi.RegistrationTime.Unix(),
		Ultimate: pi.Ultimate, Signatures: pi.Sigs, CA: pi.CA,
	}
	for _, r := range pi.References {
		n.References = append(n.References, r.Abs(storeDir))
	}
	if !pi.Deriver.IsZero() {
		n.Deriver = pi.Deriver.Abs(storeDir)
	}
	return n
}

// FromNix parses an entry of `nix path-info --json`.
func FromNix(storeDir string, n NixPathInfo) (*PathInfo, error) {
	p, err := ParsePath(storeDir, n.Path)
	if err != nil {
		return nil, err
	}
	pi := &PathInfo{Path: p, NarSize: n.NarSize, Sigs: n.Signatures, CA: n.CA, Ultimate: n.Ultimate}
	if n.RegistrationTime != 0 {
		pi.RegistrationTime = time.Unix(n.RegistrationTime, 0)
	}
	if pi.NarHash, err = ParseHash(n.NarHash); err != nil {
		return nil, fmt.Errorf("%s: %w", n.Path, err)
	}
	if n.NarSize == 0 {
		return nil, fmt.Errorf("%s: narSize is missing", n.Path)
	}
	for _, r := range n.References {
		ref, err := ParsePath(storeDir, r)
		if err != nil {
			return nil, fmt.Errorf("%s: reference: %w", n.Path, err)
		}
		pi.References = append(pi.References, ref)
	}
	pi.References = SortRefs(pi.References)
	if n.Deriver != "" {
		if pi.Deriver, err = ParsePath(storeDir, n.Deriver); err != nil {
			return nil, fmt.Errorf("%s: deriver: %w", n.Path, err)
		}
	}
	return pi, nil
}
