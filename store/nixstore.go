package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
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
	pi.References = sortRefs(pi.References)
	if n.Deriver != "" {
		if pi.Deriver, err = ParsePath(storeDir, n.Deriver); err != nil {
			return nil, fmt.Errorf("%s: deriver: %w", n.Path, err)
		}
	}
	return pi, nil
}

// ErrNixMissing means the Nix command-line tools are not installed.
var ErrNixMissing = errors.New("the Nix tools (nix, nix-store) are not installed; install Nix (Debian: apt-get install nix-bin)")

// ImportNix copies the closures of paths from the local Nix store into s:
// metadata from `nix path-info --json -r`, contents from `nix-store --dump`,
// each NAR checked against Nix's narHash, references first. It calls
// progress (if non-nil) after each path it adds, and returns the paths added.
func (s *Store) ImportNix(ctx context.Context, paths []string, progress func(pi *PathInfo)) ([]*PathInfo, error) {
	if _, err := exec.LookPath("nix"); err != nil {
		return nil, ErrNixMissing
	}
	// Only the local Nix store: never let Nix try its substituters.
	args := append([]string{"--extra-experimental-features", "nix-command", "path-info", "--offline", "--option", "substituters", "", "--json", "-r", "--"}, paths...)
	out, err := runNix(ctx, "nix", args...)
	if err != nil {
		return nil, err
	}
	var entries []NixPathInfo
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, fmt.Errorf("reading `nix path-info --json` output: %w", err)
	}
	infos := make([]*PathInfo, 0, len(entries))
	for _, e := range entries {
		pi, err := FromNix(s.storeDir, e)
		if err != nil {
			return nil, fmt.Errorf("nix path-info: %w", err)
		}
		infos = append(infos, pi)
	}
	order, err := topoOrder(infos)
	if err != nil {
		return nil, err
	}
	var added []*PathInfo
	for _, pi := range order {
		if ok, err := s.IsValid(pi.Path); err != nil {
			return added, err
		} else if ok {
			continue
		}
		got, err := s.importOne(ctx, pi)
		if err != nil {
			return added, err
		}
		added = append(added, got)
		if progress != nil {
			progress(got)
		}
	}
	return added, nil
}

func (s *Store) importOne(ctx context.Context, pi *PathInfo) (*PathInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix-store", "--dump", pi.Path.Abs(s.storeDir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	info := *pi
	info.Sigs = slices.Clone(pi.Sigs)
	got, addErr := s.AddNAR(ctx, &info, out)
	if addErr != nil {
		cancel()
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil && addErr == nil {
		return nil, fmt.Errorf("nix-store --dump %s: %w: %s", pi.Path.Abs(s.storeDir), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return got, addErr
}

func runNix(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// NixUsable reports why the local Nix cannot be used by this process (nil
// when it can): not installed, or installed but its store unreachable, as
// for a normal user without access to nix-daemon.
func NixUsable() error {
	if _, err := exec.LookPath("nix-store"); err != nil {
		return ErrNixMissing
	}
	var stderr bytes.Buffer
	cmd := exec.Command("nix-store", "--query", "--hash", "/nix/store/00000000000000000000000000000000-trove-probe")
	cmd.Stderr = &stderr
	_ = cmd.Run() // the path is never valid; only how it fails matters
	if msg := strings.TrimSpace(stderr.String()); strings.Contains(msg, "Permission denied") || strings.Contains(msg, "cannot connect") {
		return fmt.Errorf("Nix is installed but this user cannot use its store (%s); run as root or with nix-daemon access", msg)
	}
	return nil
}
