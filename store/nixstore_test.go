package store_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/store"
)

// TestImportNixMatchesNix imports a real closure built by nix-build and
// checks that trove's path infos equal `nix path-info --json -r`.
func TestImportNixMatchesNix(t *testing.T) {
	nixtest.Require(t)
	closure := nixtest.BuildFixtureClosure(t)
	top := closure[len(closure)-1]

	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var progressed []string
	added, err := s.ImportNix(ctx, []string{top}, func(pi *nix.PathInfo) { progressed = append(progressed, pi.Path.Abs(s.StoreDir())) })
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 3 || !slices.Equal(progressed, closure) {
		t.Fatalf("imported %v, want the closure references first: %v", progressed, closure)
	}

	var want []nix.NixPathInfo
	if err := json.Unmarshal(nixtest.Run(t, "nix", "--extra-experimental-features", "nix-command", "path-info", "--json", "-r", top), &want); err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		p, err := nix.ParsePath(s.StoreDir(), w.Path)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := s.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		got := pi.ToNix(s.StoreDir())
		if got.NarHash != w.NarHash || got.NarSize != w.NarSize || !slices.Equal(got.References, w.References) ||
			got.Deriver != w.Deriver || !slices.Equal(got.Signatures, w.Signatures) || got.CA != w.CA {
			t.Errorf("%s:\n got %+v\nwant %+v", w.Path, got, w)
		}
	}
	// A second import adds nothing; the store verifies clean.
	again, err := s.ImportNix(ctx, []string{top}, nil)
	if err != nil || len(again) != 0 {
		t.Fatalf("re-import added %d paths: %v", len(again), err)
	}
	var problems []store.Problem
	if _, err := s.Verify(ctx, nil, func(p store.Problem) { problems = append(problems, p) }); err != nil || len(problems) > 0 {
		t.Fatalf("verify after import: %v %v", problems, err)
	}
}

func TestImportNixRefusesNonStorePaths(t *testing.T) {
	nixtest.Require(t)
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ImportNix(context.Background(), []string{"/nix/store/00000000000000000000000000000000-absent"}, nil); err == nil {
		t.Fatal("importing an absent path succeeded")
	}
}
