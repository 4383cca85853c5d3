package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/nixtest"
)

// nixImport runs `nix-store --import` of file into a fresh chroot store and
// returns the store's URL.
func nixImport(t *testing.T, file string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "nixroot")
	t.Cleanup(func() { makeWritable(root) })
	url := "local?root=" + root
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := nixtest.Command(t, "nix-store", "--store", url, "--import")
	cmd.Stdin = in
	nixtest.RunCmd(t, cmd)
	nixtest.Run(t, "nix-store", "--store", url, "--verify", "--check-contents")
	return url
}

// nixPathInfos is `nix path-info --json -r` of paths in the store at url.
func nixPathInfos(t *testing.T, url string, paths ...string) map[string]*nix.PathInfo {
	t.Helper()
	args := append([]string{"--extra-experimental-features", "nix-command", "path-info", "--json", "-r"}, paths...)
	if url != "" {
		args = append([]string{"--store", url}, args...)
	}
	var infos []nix.NixPathInfo
	if err := json.Unmarshal(nixtest.Run(t, "nix", args...), &infos); err != nil {
		t.Fatal(err)
	}
	out := map[string]*nix.PathInfo{}
	for _, n := range infos {
		pi, err := nix.FromNix(nix.DefaultStoreDir, n)
		if err != nil {
			t.Fatal(err)
		}
		out[n.Path] = pi
	}
	return out
}

func requireNixHas(t *testing.T, got map[string]*nix.PathInfo, want []*nix.PathInfo) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("Nix has %d paths, want %d", len(got), len(want))
	}
	for _, w := range want {
		g := got[w.Path.Abs(nix.DefaultStoreDir)]
		if g == nil {
			t.Fatalf("Nix lacks %s", w.Path)
		}
		if g.NarHash != w.NarHash || g.NarSize != w.NarSize || !slices.Equal(g.References, w.References) || g.Deriver != w.Deriver {
			t.Fatalf("%s: Nix has %s %d %v %v, trove %s %d %v %v", w.Path, g.NarHash, g.NarSize, g.References, g.Deriver,
				w.NarHash, w.NarSize, w.References, w.Deriver)
		}
	}
}

func writeExport(t *testing.T, m *machine, refs ...string) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := CreateNixExport(context.Background(), &b, m.store, m.hist, refs); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "closure.nixexport")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestNixImportReadsExport: `nix-store --import` takes the nix-export
// format, for a configuration made in trove and for a closure Nix built
// (whose export must equal `nix-store --export` byte for byte).
func TestNixImportReadsExport(t *testing.T) {
	nixtest.Require(t)
	t.Run("trove configuration", func(t *testing.T) {
		a := newMachine(t)
		key := newKey(t, "laptop-1")
		f := buildFixture(t, a.store, key)
		publish(t, a, key, "laptop", f.root.Path, "bin/activate")
		url := nixImport(t, writeExport(t, a, "laptop"))
		requireNixHas(t, nixPathInfos(t, url, f.root.Path.Abs(nix.DefaultStoreDir)), f.all)
	})
	t.Run("closure built by nix-build", func(t *testing.T) {
		closure := nixtest.BuildFixtureClosure(t)
		top := closure[len(closure)-1]
		a := newMachine(t)
		if _, err := a.store.ImportNix(context.Background(), []string{top}, nil); err != nil {
			t.Fatal(err)
		}
		file := writeExport(t, a, top)
		ours, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		theirs := nixtest.Run(t, "nix-store", append([]string{"--export"}, closure...)...)
		if !bytes.Equal(ours, theirs) {
			t.Errorf("our export (%d bytes) differs from nix-store --export (%d bytes)", len(ours), len(theirs))
		}
		want, err := a.store.Closure(mustParse(t, top))
		if err != nil {
			t.Fatal(err)
		}
		url := nixImport(t, file)
		requireNixHas(t, nixPathInfos(t, url, top), want)
		// And the hashes are the real store's.
		requireNixHas(t, nixPathInfos(t, "", top), want)
	})
}

func mustParse(t testing.TB, p string) nix.Path {
	t.Helper()
	sp, err := nix.ParsePath(nix.DefaultStoreDir, p)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}
