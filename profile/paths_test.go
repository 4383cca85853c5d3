package profile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRecordMovesOnlyAnEmptyProfile: a configuration's profile path may
// change while it has no generations there; once it has, another path is
// refused, and the recorded one keeps being used.
func TestRecordMovesOnlyAnEmptyProfile(t *testing.T) {
	s, p := testProfiles(t)
	roots := twoGenerations(t, s)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a", "prof"), filepath.Join(dir, "b", "prof")
	for i, step := range []struct {
		do      func() error
		wantErr string
		want    string // the path of laptop's profile after it
	}{
		{func() error { return p.Record("laptop", first) }, "", first},
		{func() error { return p.Record("laptop", second) }, "", second}, // nothing at first yet
		{func() error { return p.Switch("laptop", 1, roots[0]) }, "", second},
		{func() error { return p.Record("laptop", second) }, "", second}, // the same: nothing changes
		{func() error { return p.Record("laptop", first) }, "does not move it", second},
		{func() error { return p.Use("laptop", first) }, "does not move it", second},
		{func() error { return p.Record("laptop", filepath.Join(p.dir, "laptop")) }, "does not move it", second},
		{func() error { return p.Record("desk", second) }, "already the profile of laptop", second},
		{func() error { return p.Record("desk", "relative/prof") }, "want an absolute path", second},
	} {
		err := step.do()
		if step.wantErr == "" && err != nil || step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)) {
			t.Fatalf("step %d: %v, want %q", i, err, step.wantErr)
		}
		if got, err := p.Path("laptop"); err != nil || got != step.want {
			t.Fatalf("after a step, laptop's profile is %q (%v), want %s", got, err, step.want)
		}
	}
	// Generation links beside the recorded path, named after it.
	if link, err := os.Readlink(second); err != nil || link != "prof-1-link" {
		t.Fatalf("%s → %q (%v)", second, link, err)
	}
	// A fresh Profiles reads the record; its roots are GC roots.
	got, err := OpenProfiles(s).Roots()
	if err != nil || !slices.Contains(got, roots[0]) {
		t.Fatalf("roots %v (%v) lack the recorded profile's generation %s", got, err, roots[0])
	}
}

// TestSwitchKeepsALinkMadeElsewhere: a generation link trove would make
// that exists and points at another root (made by nix-env on a profile
// trove was given) is left alone, and the switch refused.
func TestSwitchKeepsALinkMadeElsewhere(t *testing.T) {
	s, p := testProfiles(t)
	roots := twoGenerations(t, s)
	prof := filepath.Join(t.TempDir(), "system")
	if err := p.Record("laptop", prof); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(s.LinkTarget(roots[1]), prof+"-1-link"); err != nil {
		t.Fatal(err)
	}
	if err := p.Switch("laptop", 1, roots[0]); err == nil || !strings.Contains(err.Error(), "does not replace it") {
		t.Fatalf("switch over another root's link: %v", err)
	}
	if r, err := p.Root("laptop", 1); err != nil || r != roots[1] {
		t.Fatalf("the link made elsewhere now names %v (%v)", r, err)
	}
	for _, f := range []string{prof, filepath.Join(filepath.Dir(prof), ".system.highest")} {
		if _, err := os.Lstat(f); err == nil {
			t.Fatalf("the refused switch made %s", f)
		}
	}
}
