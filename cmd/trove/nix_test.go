package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/trove-p2p/trove/profile"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// genLine is one generation as trove generations --json and nix-env
// --list-generations both show it.
type genLine struct {
	n       uint64
	current bool
}

// nixGenerations runs nix-env --list-generations -p profile on the Nix
// store under root.
func nixGenerations(t *testing.T, root, profile string) []genLine {
	t.Helper()
	out := nixtest.Run(t, "nix-env", "--store", "local?root="+root, "--list-generations", "-p", profile)
	var gens []genLine
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			t.Fatalf("nix-env --list-generations printed %q", out)
		}
		gens = append(gens, genLine{n, slices.Contains(f, "(current)")})
	}
	return gens
}

// troveGenerations runs trove generations NAME --json.
func troveGenerations(t *testing.T, home, name string, args ...string) []genLine {
	t.Helper()
	var gens []profile.Generation
	if err := json.Unmarshal([]byte(mustTrove(t, home, append([]string{"generations", name, "--json"}, args...)...)), &gens); err != nil {
		t.Fatal(err)
	}
	var out []genLine
	for _, g := range gens {
		out = append(out, genLine{g.Number, g.Current})
	}
	return out
}

// TestProfilePathOnNixStore: with the Nix store, trove activate --profile
// PATH keeps the configuration's generations at PATH as nix-env -p PATH
// does, so Nix's tools list and roll back the same generations as trove,
// and Nix's garbage collector keeps them although PATH is outside Nix's
// profiles directory. The path is recorded: later commands need no
// --profile, and another path is refused.
func TestProfilePathOnNixStore(t *testing.T) {
	nixtest.Require(t)
	nixtest.Isolate(t)
	home, root := newHome(t), t.TempDir()
	mustDo(t, os.MkdirAll(home, 0o755))
	mustDo(t, os.WriteFile(filepath.Join(home, "config.toml"), []byte("store = \"nix\"\nnix_store = \"local?root="+root+"\"\n"), 0o644))
	mustTrove(t, home, "key", "generate", "me-1")
	var gens [2]string
	for i := range gens {
		dir := filepath.Join(t.TempDir(), "cfg")
		mustDo(t, os.MkdirAll(dir, 0o755))
		mustDo(t, os.WriteFile(filepath.Join(dir, "version"), []byte(fmt.Sprint("generation ", i+1)), 0o644))
		gens[i] = strings.TrimSpace(mustTrove(t, home, "add", dir))
	}
	prof := filepath.Join(t.TempDir(), "profiles", "prof")
	for i, p := range gens {
		mustTrove(t, home, "publish", "cfg", p)
		mustTrove(t, home, "activate", "cfg", "--profile", prof)
		// As nix-env -p makes them: PATH → PATH-N-link → the store path.
		link, _ := os.Readlink(prof)
		target, _ := os.Readlink(filepath.Join(filepath.Dir(prof), link))
		if want := fmt.Sprintf("prof-%d-link", i+1); link != want || target != p {
			t.Fatalf("after activating generation %d: %s → %s → %s, want %s → %s", i+1, prof, link, target, want, p)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "nix/var/nix/profiles/cfg")); err == nil {
		t.Error("the profile was also made in Nix's profiles directory")
	}
	want := []genLine{{1, false}, {2, true}}
	if got := troveGenerations(t, home, "cfg"); !slices.Equal(got, want) {
		t.Fatalf("trove generations cfg (no --profile): %v, want %v", got, want)
	}
	if got := nixGenerations(t, root, prof); !slices.Equal(got, want) {
		t.Fatalf("nix-env --list-generations -p %s: %v, want %v", prof, got, want)
	}

	nixtest.Run(t, "nix-env", "--store", "local?root="+root, "--rollback", "-p", prof)
	want = []genLine{{1, true}, {2, false}}
	if got := troveGenerations(t, home, "cfg"); !slices.Equal(got, want) {
		t.Fatalf("trove generations after nix-env --rollback: %v, want %v", got, want)
	}

	// Nothing but the generation links roots the two paths now (trove's
	// daemon connections are gone with its processes).
	nixtest.Run(t, "nix-collect-garbage", "--store", "local?root="+root)
	if out := nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--check-validity", "--print-invalid", gens[0], gens[1]); len(out) > 0 {
		t.Fatalf("nix-collect-garbage collected generations of a profile outside Nix's profiles directory: %s", out)
	}
	// The roots go with the generation: deleting it lets Nix collect it.
	mustTrove(t, home, "generations", "delete", "cfg", "2")
	nixtest.Run(t, "nix-collect-garbage", "--store", "local?root="+root)
	if out := strings.TrimSpace(string(nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--check-validity", "--print-invalid", gens[0], gens[1]))); out != gens[1] {
		t.Fatalf("after deleting generation 2 and collecting, invalid: %q, want %s", out, gens[1])
	}

	// Another path for cfg is refused, and changes nothing.
	other := filepath.Join(t.TempDir(), "other")
	if _, stderr, code := runTrove(t, home, "activate", "cfg", "--generation", "1", "--profile", other); code == 0 || !strings.Contains(stderr, "does not move it") {
		t.Fatalf("activate with another --profile: exit %d, %q", code, stderr)
	}
	if _, err := os.Lstat(other); err == nil {
		t.Fatal("a refused --profile made a profile")
	}
	// --nix-profile on the Nix store is --profile: nothing imported, and
	// no second profile numbered by Nix.
	if out := mustTrove(t, home, "activate", "cfg", "--generation", "1", "--nix-profile", prof); !strings.Contains(out, "switched cfg from generation 1 to 1") {
		t.Fatalf("activate --nix-profile (the profile's own path) printed %q", out)
	}
	if _, stderr, code := runTrove(t, home, "activate", "cfg", "--generation", "1", "--nix-profile", other); code == 0 || !strings.Contains(stderr, "does not move it") {
		t.Fatalf("activate --nix-profile elsewhere on the Nix store: exit %d, %q", code, stderr)
	}
}
