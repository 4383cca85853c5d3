package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLayering checks the import direction DESIGN.md sets: store knows
// nothing of peers, p2p decides nothing, sync does not speak wire formats
// it does not own, and no product package imports bench or testnet (only
// this command's demo and bench front ends do).
func TestLayering(t *testing.T) {
	const mod = "github.com/trove-p2p/trove/"
	forbidden := map[string][]string{
		"store":    {"manifest", "p2p", "sync", "agent", "nixcache", "bundle", "bench", "testnet"},
		"manifest": {"p2p", "sync", "agent", "nixcache", "bundle", "bench", "testnet"},
		"p2p":      {"sync", "agent", "nixcache", "bundle", "bench", "testnet"},
		"sync":     {"agent", "nixcache", "bundle", "bench", "testnet"},
		"agent":    {"bench", "testnet"},
		"nixcache": {"agent", "bench", "testnet"},
		"bundle":   {"agent", "p2p", "sync", "nixcache", "bench", "testnet"},
		// nix holds the pure formats, PathInfo's one codec among them.
		"nix": {"store", "manifest", "trust", "p2p", "sync", "agent", "nixcache", "bundle", "bench", "testnet"},
		// trust is the one belief rule: it judges PathInfos, whatever brought them.
		"trust": {"store", "p2p", "sync", "agent", "nixcache", "bundle", "bench", "testnet"},
		// strictcbor is a leaf: every decoder of outside bytes uses it.
		"strictcbor": {"store", "manifest", "p2p", "sync", "agent", "nixcache", "bundle", "bench", "testnet"},
	}
	for pkg, bad := range forbidden {
		files, _ := filepath.Glob(filepath.Join("..", "..", pkg, "*.go"))
		if len(files) == 0 && (pkg == "store" || pkg == "p2p" || pkg == "sync") {
			t.Fatalf("found no Go files for %s: the test is looking in the wrong place", pkg)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				for _, b := range bad {
					if path == mod+b {
						t.Errorf("%s imports %s: %s must not depend on %s", f, path, pkg, b)
					}
				}
			}
		}
	}
}
