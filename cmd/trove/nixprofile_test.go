package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nixtest"
)

// TestActivateSetsARealNixProfile: trove activate --nix-profile imports
// the closure into the real Nix store and points a Nix profile at it.
func TestActivateSetsARealNixProfile(t *testing.T) {
	nixtest.Require(t)
	nixtest.Isolate(t)
	home := t.TempDir()
	mustTrove(t, home, "key", "generate", "me-1")
	dir := t.TempDir()
	root := filepath.Join(dir, "nixprof-cfg")
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	// Unique content, so the path is new to the Nix store each run.
	os.WriteFile(filepath.Join(root, "stamp"), []byte(t.Name()+dir), 0o644)
	os.WriteFile(filepath.Join(root, "bin", "hello"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	p := strings.TrimSpace(mustTrove(t, home, "add", root))
	mustTrove(t, home, "publish", "cfg", p)
	profile := filepath.Join(t.TempDir(), "system")
	out := mustTrove(t, home, "activate", "cfg", "--nix-profile", profile)
	if !strings.Contains(out, "set Nix profile") {
		t.Fatalf("activate printed %q", out)
	}
	target, err := filepath.EvalSymlinks(profile)
	if err != nil || target != p {
		t.Fatalf("Nix profile resolves to %q (%v), want %s", target, err, p)
	}
	nixtest.Run(t, "nix-store", "--verify-path", p)
	gens := string(nixtest.Run(t, "nix-env", "-p", profile, "--list-generations"))
	if !strings.Contains(gens, "(current)") {
		t.Fatalf("nix-env lists no current generation: %q", gens)
	}
	nixtest.Run(t, "nix-store", "--delete", "--ignore-liveness", p)
}
