package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/bundle"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
)

// setNixProfile makes a real Nix profile point at root: the closure is
// imported into the Nix store (nix-store --import of a nix-export stream,
// which skips what Nix already has), then nix-env -p PROFILE --set ROOT,
// so a NixOS machine can switch with its own tools. The store dir must be
// Nix's.
func setNixProfile(ctx context.Context, s *store.Store, h *manifest.History, profile string, root nix.Path) error {
	if _, err := exec.LookPath("nix-env"); err != nil {
		return store.ErrNixMissing
	}
	closure, err := s.Closure(root)
	if err != nil {
		return err
	}
	// Only what Nix lacks is exported: nix-store --import needs its
	// references valid, and valid ones are skipped anyway.
	var missing []string
	for _, pi := range closure {
		if exec.CommandContext(ctx, "nix-store", "--check-validity", pi.Path.Abs(s.StoreDir())).Run() != nil {
			missing = append(missing, pi.Path.Abs(s.StoreDir()))
		}
	}
	if len(missing) > 0 {
		pr, pw := io.Pipe()
		go func() {
			_, err := bundle.CreateNixExport(ctx, pw, s, h, missing)
			pw.CloseWithError(err)
		}()
		cmd := exec.CommandContext(ctx, "nix-store", "--import")
		cmd.Stdin = pr
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		pr.CloseWithError(io.ErrClosedPipe)
		if err != nil {
			return fmt.Errorf("nix-store --import: %v: %s", err, strings.TrimSpace(stderr.String()))
		}
	}
	out, err := exec.CommandContext(ctx, "nix-env", "-p", profile, "--set", root.Abs(s.StoreDir())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nix-env -p %s --set: %v: %s", profile, err, strings.TrimSpace(string(out)))
	}
	return nil
}
