package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
)

// nixPathInfo runs the real `nix path-info --json` with args.
func nixPathInfo(t *testing.T, args ...string) map[string]nix.NixPathInfo {
	t.Helper()
	out := nixtest.Run(t, "nix", append([]string{"--extra-experimental-features", "nix-command", "path-info", "--json"}, args...)...)
	return pathInfoByPath(t, out)
}

func pathInfoByPath(t *testing.T, out []byte) map[string]nix.NixPathInfo {
	t.Helper()
	var infos []nix.NixPathInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		t.Fatalf("path-info --json printed %q: %v", out, err)
	}
	m := map[string]nix.NixPathInfo{}
	for _, in := range infos {
		m[in.Path] = in
	}
	return m
}

// samePathInfo compares what must agree between trove and Nix for the same
// path: everything but registrationTime and ultimate, which say when and how
// each store got it.
func samePathInfo(t *testing.T, got, want nix.NixPathInfo) {
	t.Helper()
	if got.NarHash != want.NarHash || got.NarSize != want.NarSize || !slices.Equal(got.References, want.References) ||
		got.Deriver != want.Deriver || got.CA != want.CA || !slices.Equal(got.Signatures, want.Signatures) {
		t.Errorf("trove path-info --json:\n %+v\nnix path-info --json:\n %+v", got, want)
	}
}

// TestAddAndNARMatchNix checks trove add, nar dump, nar hash and path-info
// against nix-store --add, nix-store --dump, nix-hash and nix path-info.
func TestAddAndNARMatchNix(t *testing.T) {
	nixtest.Require(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "trove-cli-tree")
	writeTree(t, tree, sampleTree)
	file := filepath.Join(dir, "trove-cli-file")
	mustDo(t, os.WriteFile(file, []byte("a file for the CLI interop test\n"), 0o755))
	link := filepath.Join(dir, "trove-cli-link")
	mustDo(t, os.Symlink("../dangling/target", link))
	home := newHome(t)

	for _, src := range []string{tree, file, link} {
		t.Run(filepath.Base(src), func(t *testing.T) {
			var nar bytes.Buffer
			if stderr, code := runTroveIO(t, "", strings.NewReader(""), &nar, "nar", "dump", src); code != 0 {
				t.Fatalf("nar dump: exit %d: %s", code, stderr)
			}
			if want := nixtest.Run(t, "nix-store", "--dump", src); !bytes.Equal(nar.Bytes(), want) {
				t.Errorf("trove nar dump differs from nix-store --dump (%d vs %d bytes)", nar.Len(), len(want))
			}
			want := "sha256:" + string(nixtest.Run(t, "nix-hash", "--type", "sha256", "--base32", src))
			if got := mustTrove(t, "", "nar", "hash", src); got != want {
				t.Errorf("trove nar hash printed %q, nix-hash %q", got, want)
			}

			nixPath := string(nixtest.Run(t, "nix-store", "--add", src))
			got := mustTrove(t, home, "add", src)
			if got != nixPath {
				t.Fatalf("trove add printed %q, nix-store --add %q", got, nixPath)
			}
			p := strings.TrimSpace(got)
			troveInfo := pathInfoByPath(t, []byte(mustTrove(t, home, "path-info", "--json", "-S", p)))[p]
			nixInfo := nixPathInfo(t, "-S", p)[p]
			samePathInfo(t, troveInfo, nixInfo)
			if troveInfo.ClosureSize != nixInfo.ClosureSize {
				t.Errorf("closureSize: trove %d, nix %d", troveInfo.ClosureSize, nixInfo.ClosureSize)
			}
		})
	}
}

// TestImportNixMatchesNix imports the offline fixture closure and checks
// that trove reports it as Nix does.
func TestImportNixMatchesNix(t *testing.T) {
	nixtest.Require(t)
	closure := nixtest.BuildFixtureClosure(t)
	top := closure[len(closure)-1]
	nixtest.Isolate(t) // for the nix commands trove itself runs
	home := newHome(t)

	out := mustTrove(t, home, "import-nix", top)
	if !regexp.MustCompile(`^imported 3 paths, [0-9.]+ (B|KiB)\n$`).MatchString(out) {
		t.Errorf("import-nix printed %q", out)
	}
	if out := mustTrove(t, home, "import-nix", top); !strings.HasPrefix(out, "nothing to import") {
		t.Errorf("a second import-nix printed %q", out)
	}
	if got := strings.Fields(mustTrove(t, home, "closure", top)); !slices.Equal(got, closure) {
		t.Errorf("trove closure printed %q; nix-store -qR %q", got, closure)
	}
	troveInfos := pathInfoByPath(t, []byte(mustTrove(t, home, "path-info", "--json", "-r", top)))
	nixInfos := nixPathInfo(t, "-r", top)
	if len(troveInfos) != len(nixInfos) {
		t.Fatalf("trove path-info -r has %d paths, nix %d", len(troveInfos), len(nixInfos))
	}
	for p, want := range nixInfos {
		samePathInfo(t, troveInfos[p], want)
	}
	if got := mustTrove(t, home, "verify", "--all"); got != "checked 3 paths, no problems\n" {
		t.Errorf("verify --all after import-nix printed %q", got)
	}
}

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
