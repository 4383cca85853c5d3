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

	"github.com/trove-p2p/trove/nix"
)

// ErrNixMissing means the Nix command-line tools are not installed.
var ErrNixMissing = errors.New("the Nix tools (nix, nix-store) are not installed; install Nix (Debian: apt-get install nix-bin)")

// ImportNix copies the closures of paths from the local Nix store into s:
// metadata from `nix path-info --json -r`, contents from `nix-store --dump`,
// each NAR checked against Nix's narHash, references first. It calls
// progress (if non-nil) after each path it adds, and returns the paths added.
func (s *Store) ImportNix(ctx context.Context, paths []string, progress func(pi *nix.PathInfo)) ([]*nix.PathInfo, error) {
	if s.nix != nil {
		return nil, errors.New("this trove home works on Nix's own store: its paths are shared as they are, with nothing to import")
	}
	if _, err := exec.LookPath("nix"); err != nil {
		return nil, ErrNixMissing
	}
	// Only the local Nix store: never let Nix try its substituters.
	args := append([]string{"--extra-experimental-features", "nix-command", "path-info", "--offline", "--option", "substituters", "", "--json", "-r", "--"}, paths...)
	out, err := runNix(ctx, "nix", args...)
	if err != nil {
		return nil, err
	}
	var entries []nix.NixPathInfo
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, fmt.Errorf("reading `nix path-info --json` output: %w", err)
	}
	infos := make([]*nix.PathInfo, 0, len(entries))
	for _, e := range entries {
		pi, err := nix.FromNix(s.storeDir, e)
		if err != nil {
			return nil, fmt.Errorf("nix path-info: %w", err)
		}
		infos = append(infos, pi)
	}
	order, err := topoOrder(infos)
	if err != nil {
		return nil, err
	}
	var added []*nix.PathInfo
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

func (s *Store) importOne(ctx context.Context, pi *nix.PathInfo) (*nix.PathInfo, error) {
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
