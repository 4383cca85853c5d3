package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"github.com/trove-p2p/trove/profile"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
)

// A file holding "hi\n" named README.x, as `nix-store --add` and
// `nix path-info --json` (Nix 2.8) report it.
const (
	hiPath    = "/nix/store/57a5pbr9p18f0vf0l8hcp148k36nvdcq-README.x"
	hiNarHash = "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h"
	hiSRI     = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY="
	hiNarSize = 120
)

func writeHi(t testing.TB) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "README.x")
	if err := os.WriteFile(src, []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestInitIsIdempotent(t *testing.T) {
	home := newHome(t)
	out := mustTrove(t, home, "init")
	if want := "created trove home " + home + " (store dir /nix/store, embedded store)\n"; out != want {
		t.Errorf("first init printed %q, want %q", out, want)
	}
	for _, d := range []string{"db", "store"} {
		if fi, err := os.Stat(filepath.Join(home, d)); err != nil || !fi.IsDir() {
			t.Errorf("after init, %s/%s is not a directory: %v", home, d, err)
		}
	}
	mustTrove(t, home, "add", writeHi(t))
	out = mustTrove(t, home, "init")
	if want := "trove home " + home + " already exists (store dir /nix/store, embedded store, 1 path, 120 B)\n"; out != want {
		t.Errorf("second init printed %q, want %q", out, want)
	}
	if got := mustTrove(t, home, "path-info", hiPath); got != hiPath+"\n" {
		t.Errorf("after a second init the added path is gone: path-info printed %q", got)
	}
}

func TestTroveHomeFromEnvironment(t *testing.T) {
	home := newHome(t)
	env := func(k string) string {
		if k == "TROVE_HOME" {
			return home
		}
		return ""
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), newApp(strings.NewReader(""), &out, &errb, env), []string{"init"}); code != 0 {
		t.Fatalf("init with TROVE_HOME: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), home) {
		t.Errorf("init with TROVE_HOME=%s printed %q", home, out.String())
	}
}

func TestAddPrintsNixStorePath(t *testing.T) {
	home := newHome(t)
	src := writeHi(t)
	if got := mustTrove(t, home, "add", src); got != hiPath+"\n" {
		t.Fatalf("trove add printed %q, want %q (what nix-store --add prints)", got, hiPath)
	}
	// Adding again is harmless and prints the same path.
	if got := mustTrove(t, home, "add", src); got != hiPath+"\n" {
		t.Fatalf("second trove add printed %q", got)
	}

	tree := filepath.Join(t.TempDir(), "tree")
	writeTree(t, tree, sampleTree)
	out := mustTrove(t, home, "add", src, tree)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || lines[0] != hiPath || !regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-tree$`).MatchString(lines[1]) {
		t.Fatalf("trove add of two paths printed %q", out)
	}

	// --name renames; --store-dir changes the path (and a home keeps its store dir).
	if got := mustTrove(t, home, "add", "--name", "hello", src); !strings.HasSuffix(got, "-hello\n") {
		t.Errorf("add --name hello printed %q", got)
	}
	other := newHome(t)
	got := mustTrove(t, other, "--store-dir", "/gnu/store", "add", src)
	if !strings.HasPrefix(got, "/gnu/store/") || strings.Contains(got, "57a5pbr9p18f0vf0l8hcp148k36nvdcq") {
		t.Errorf("add with --store-dir /gnu/store printed %q", got)
	}
	_, stderr, code := runTrove(t, other, "path-info", "--all")
	if code != 1 || !strings.Contains(stderr, "--store-dir /gnu/store") {
		t.Errorf("opening a /gnu/store home with the default store dir: exit %d, %q; want 1 and a hint", code, stderr)
	}
}

func TestPathInfo(t *testing.T) {
	home := newHome(t)
	mustTrove(t, home, "add", writeHi(t))

	for _, arg := range []string{hiPath, hiPath + "/below", filepath.Base(hiPath)} {
		if got := mustTrove(t, home, "path-info", arg); got != hiPath+"\n" {
			t.Errorf("path-info %s printed %q", arg, got)
		}
	}
	link := filepath.Join(t.TempDir(), "result")
	if err := os.Symlink(hiPath, link); err != nil {
		t.Fatal(err)
	}
	if got := mustTrove(t, home, "path-info", link); got != hiPath+"\n" {
		t.Errorf("path-info of a ./result-style symlink printed %q", got)
	}

	// Columns as nix path-info -sS lays them out.
	if got, want := mustTrove(t, home, "path-info", "-sS", hiPath), hiPath+"\t        120\t        120\n"; got != want {
		t.Errorf("path-info -sS printed %q, want %q", got, want)
	}
	if got := mustTrove(t, home, "path-info", "--sigs", hiPath); got != hiPath+"\tca:fixed:r:"+hiNarHash+"\n" {
		t.Errorf("path-info --sigs printed %q", got)
	}

	for _, tc := range []struct {
		args        []string
		closureSize bool
	}{
		{[]string{"--json", hiPath}, false},
		{[]string{"--json", "-r", "-S", hiPath}, true},
		{[]string{"--json", "--all"}, false},
	} {
		out := mustTrove(t, home, append([]string{"path-info"}, tc.args...)...)
		var infos []map[string]any
		if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
			t.Fatalf("path-info %v printed %q, not a JSON array of one (%v)", tc.args, out, err)
		}
		got := infos[0]
		want := map[string]any{
			"path":       hiPath,
			"narHash":    hiSRI,
			"narSize":    float64(hiNarSize),
			"references": []any{},
			"ca":         "fixed:r:" + hiNarHash,
		}
		if tc.closureSize {
			want["closureSize"] = float64(hiNarSize)
		}
		for k, v := range want {
			if fmt.Sprint(got[k]) != fmt.Sprint(v) {
				t.Errorf("path-info %v: %s = %v, want %v", tc.args, k, got[k], v)
			}
		}
		if refs, ok := got["references"].([]any); !ok || refs == nil {
			t.Errorf("path-info %v: references is %v, want an empty array as Nix prints", tc.args, got["references"])
		}
		if _, ok := got["closureSize"]; ok != tc.closureSize {
			t.Errorf("path-info %v: closureSize present = %v, want %v", tc.args, ok, tc.closureSize)
		}
		if rt, _ := got["registrationTime"].(float64); rt <= 0 {
			t.Errorf("path-info %v: registrationTime = %v", tc.args, got["registrationTime"])
		}
		for k := range got {
			if !slices.Contains([]string{"path", "narHash", "narSize", "references", "ca", "closureSize", "deriver", "registrationTime", "ultimate", "signatures"}, k) {
				t.Errorf("path-info %v: field %q is not one nix path-info --json prints", tc.args, k)
			}
		}
	}
}

// closureFixture makes leaf ← mid ← top (top also refers to leaf) plus an
// unrelated path, through the store API, and returns their full paths.
func closureFixture(t *testing.T, home string) (leaf, mid, top, other string) {
	t.Helper()
	s := openStore(t, home)
	l := addWithRefs(t, s, "leaf", "leaf data\n")
	m := addWithRefs(t, s, "mid", "mid refers to leaf\n", l)
	tp := addWithRefs(t, s, "top", "top refers to mid and leaf\n", m, l)
	o := addWithRefs(t, s, "other", "unrelated\n")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	abs := func(p nix.Path) string { return p.Abs(nix.DefaultStoreDir) }
	return abs(l), abs(m), abs(tp), abs(o)
}

func TestClosure(t *testing.T) {
	home := newHome(t)
	leaf, mid, top, other := closureFixture(t, home)

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"closure", top}, []string{leaf, mid, top}},
		{[]string{"closure", mid}, []string{leaf, mid}},
		{[]string{"closure", leaf, other}, []string{leaf, other}},
		{[]string{"path-info", "-r", top}, []string{leaf, mid, top}},
		{[]string{"path-info", top, leaf}, []string{leaf, top}},
	} {
		got := strings.Fields(mustTrove(t, home, tc.args...))
		if !slices.Equal(got, tc.want) {
			t.Errorf("trove %s printed %q, want %q (references first)", strings.Join(tc.args, " "), got, tc.want)
		}
	}

	var got []string
	if err := json.Unmarshal([]byte(mustTrove(t, home, "closure", "--json", top)), &got); err != nil {
		t.Fatal(err)
	}
	if want := []string{leaf, mid, top}; !slices.Equal(got, want) {
		t.Errorf("closure --json = %q, want %q", got, want)
	}

	var infos []nix.NixPathInfo
	if err := json.Unmarshal([]byte(mustTrove(t, home, "path-info", "--json", "-rS", top)), &infos); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 || !slices.IsSortedFunc(infos, func(a, b nix.NixPathInfo) int { return strings.Compare(a.Path, b.Path) }) {
		t.Fatalf("path-info --json -r of top: %+v; want 3 entries sorted by path", infos)
	}
	byPath := map[string]nix.NixPathInfo{}
	for _, in := range infos {
		byPath[in.Path] = in
	}
	if refs := byPath[top].References; !slices.Equal(refs, []string{leaf, mid}) && !slices.Equal(refs, []string{mid, leaf}) {
		t.Errorf("references of top = %q", refs)
	}
	if want := byPath[leaf].NarSize + byPath[mid].NarSize + byPath[top].NarSize; byPath[top].ClosureSize != want {
		t.Errorf("closureSize of top = %d, want %d", byPath[top].ClosureSize, want)
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, tree string)
		kind    string
	}{
		{"same-size change", func(t *testing.T, tree string) { writeFile(t, filepath.Join(tree, "README"), "HELLO\n") }, "corrupt"},
		{"appended bytes", func(t *testing.T, tree string) { writeFile(t, filepath.Join(tree, "lib", "data.txt"), "more") }, "corrupt"},
		{"removed file", func(t *testing.T, tree string) { mustDo(t, os.Remove(filepath.Join(tree, "empty"))) }, "corrupt"},
		{"lost executable bit", func(t *testing.T, tree string) { mustDo(t, os.Chmod(filepath.Join(tree, "bin", "run"), 0o644)) }, "corrupt"},
		{"tree gone", func(t *testing.T, tree string) { mustDo(t, os.RemoveAll(tree)) }, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := newHome(t)
			src := filepath.Join(t.TempDir(), "tree")
			writeTree(t, src, sampleTree)
			p := strings.TrimSpace(mustTrove(t, home, "add", src))
			hi := strings.TrimSpace(mustTrove(t, home, "add", writeHi(t)))

			if got := mustTrove(t, home, "verify", "--all"); got != "checked 2 paths, no problems\n" {
				t.Fatalf("verify --all on a clean store printed %q", got)
			}
			if got := mustTrove(t, home, "verify", p); got != "checked 1 path, no problems\n" {
				t.Fatalf("verify %s on a clean store printed %q", p, got)
			}

			tree := filepath.Join(home, "store", filepath.Base(p))
			makeWritable(tree)
			_ = filepath.WalkDir(tree, func(f string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					_ = os.Chmod(f, fileMode(t, f)|0o200) // u+w
				}
				return nil
			})
			tc.corrupt(t, tree)

			stdout, stderr, code := runTrove(t, home, "verify", "--all")
			if code != 1 {
				t.Fatalf("verify --all after corruption: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if !strings.HasPrefix(stdout, p+": "+tc.kind+": ") || strings.Contains(stdout, hi) {
				t.Errorf("verify --all printed %q; want one %q problem for %s", stdout, tc.kind, p)
			}
			if !strings.Contains(stderr, "trove: 1 problem found in 2 checked paths") {
				t.Errorf("verify --all stderr = %q", stderr)
			}

			stdout, _, code = runTrove(t, home, "verify", "--json", p, hi)
			var rep localapi.VerifyReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 {
				t.Fatalf("verify --json: exit %d, %q (%v)", code, stdout, err)
			}
			if rep.Checked != 2 || len(rep.Problems) != 1 || rep.Problems[0].Path != p || rep.Problems[0].Kind != tc.kind {
				t.Errorf("verify --json = %+v", rep)
			}

			// The sound path still verifies on its own.
			if got := mustTrove(t, home, "verify", hi); got != "checked 1 path, no problems\n" {
				t.Errorf("verify %s printed %q", hi, got)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	mustDo(t, err)
	defer f.Close()
	if content == "more" {
		_, err = f.Seek(0, 2)
		mustDo(t, err)
	}
	_, err = f.WriteString(content)
	mustDo(t, err)
}

func fileMode(t *testing.T, name string) os.FileMode {
	fi, err := os.Stat(name)
	mustDo(t, err)
	return fi.Mode()
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestGCKeepsRootsAndTheirClosures(t *testing.T) {
	home := newHome(t)
	leaf, mid, top, other := closureFixture(t, home)
	hi := strings.TrimSpace(mustTrove(t, home, "add", "--root", writeHi(t)))

	if got := mustTrove(t, home, "root", "add", filepath.Base(mid)); got != "added GC root "+mid+"\n" {
		t.Errorf("root add printed %q", got)
	}
	if got := strings.Fields(mustTrove(t, home, "root", "list")); !slices.Equal(got, sorted(hi, mid)) {
		t.Errorf("root list = %q", got)
	}

	// A dry run removes nothing.
	out := mustTrove(t, home, "gc", "--dry-run")
	if want := sortedLines(other, top) + "2 paths would be removed, "; !strings.HasPrefix(out, want) {
		t.Errorf("gc --dry-run printed %q, want it to start %q", out, want)
	}
	mustTrove(t, home, "path-info", top, other)

	// gc keeps mid's closure (leaf) and hi; removes top and other.
	out = mustTrove(t, home, "gc")
	if !strings.HasPrefix(out, sortedLines(other, top)) || !regexp.MustCompile(`\n2 paths removed, \d+ B freed\n$`).MatchString(out) {
		t.Errorf("gc printed %q", out)
	}
	if got := strings.Fields(mustTrove(t, home, "path-info", "--all")); !slices.Equal(sorted(got...), sorted(leaf, mid, hi)) {
		t.Errorf("after gc the store holds %q, want leaf, mid and hi", got)
	}
	if _, stderr, code := runTrove(t, home, "path-info", top); code != 1 || !strings.Contains(stderr, "not valid") {
		t.Errorf("path-info of a collected path: exit %d, %q", code, stderr)
	}
	if got := mustTrove(t, home, "gc"); got != "0 paths removed, 0 B freed\n" {
		t.Errorf("second gc printed %q", got)
	}

	// Removing the roots lets gc remove the rest.
	if got := mustTrove(t, home, "root", "remove", mid, hi); got != "removed GC root "+mid+"\nremoved GC root "+hi+"\n" {
		t.Errorf("root remove printed %q", got)
	}
	if got := mustTrove(t, home, "root", "list", "--json"); got != "[]\n" {
		t.Errorf("root list --json with no roots printed %q", got)
	}
	var rep localapi.GCReport
	if err := json.Unmarshal([]byte(mustTrove(t, home, "gc", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Removed, sorted(leaf, mid, hi)) || rep.BytesFreed == 0 || rep.DryRun {
		t.Errorf("gc --json = %+v", rep)
	}
	if got := mustTrove(t, home, "path-info", "--all"); got != "" {
		t.Errorf("after the last gc the store still holds %q", got)
	}
	if _, err := os.Stat(filepath.Join(home, "store", filepath.Base(hi))); !os.IsNotExist(err) {
		t.Errorf("gc left the tree of %s on disk: %v", hi, err)
	}

	if _, stderr, code := runTrove(t, home, "root", "remove", hiPath); code != 1 || !strings.Contains(stderr, "is not a GC root") {
		t.Errorf("root remove of a non-root: exit %d, %q", code, stderr)
	}
}

func TestGCPrintsHumanBytes(t *testing.T) {
	home := newHome(t)
	src := filepath.Join(t.TempDir(), "big")
	mustDo(t, os.WriteFile(src, bytes.Repeat([]byte("x"), 3<<20), 0o644))
	mustTrove(t, home, "add", src)
	if out := mustTrove(t, home, "gc"); !strings.HasSuffix(out, "1 path removed, 3.0 MiB freed\n") {
		t.Errorf("gc printed %q", out)
	}
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }

func sortedLines(s ...string) string { return strings.Join(sorted(s...), "\n") + "\n" }

func TestNARDumpRestoreRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
	}{
		{"tree", sampleTree},
		{"file", nil},
		{"symlink", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			switch tc.name {
			case "file":
				mustDo(t, os.WriteFile(src, []byte("just a file\n"), 0o755))
			case "symlink":
				mustDo(t, os.Symlink("../somewhere/else", src))
			default:
				writeTree(t, src, tc.files)
			}
			var nar bytes.Buffer
			if stderr, code := runTroveIO(t, "", strings.NewReader(""), &nar, "nar", "dump", src); code != 0 {
				t.Fatalf("nar dump: exit %d: %s", code, stderr)
			}
			dst := filepath.Join(dir, "dst")
			if stderr, code := runTroveIO(t, "", bytes.NewReader(nar.Bytes()), &bytes.Buffer{}, "nar", "restore", dst); code != 0 {
				t.Fatalf("nar restore: exit %d: %s", code, stderr)
			}
			var again bytes.Buffer
			if stderr, code := runTroveIO(t, "", strings.NewReader(""), &again, "nar", "dump", dst); code != 0 {
				t.Fatalf("nar dump of the restored tree: exit %d: %s", code, stderr)
			}
			if !bytes.Equal(nar.Bytes(), again.Bytes()) {
				t.Fatalf("the restored tree dumps to a different NAR (%d vs %d bytes)", again.Len(), nar.Len())
			}
			want := nix.Hash(sha256.Sum256(nar.Bytes())).String()
			if got := mustTrove(t, "", "nar", "hash", src, dst); got != want+"\n"+want+"\n" {
				t.Errorf("nar hash printed %q, want %s twice", got, want)
			}

			// The store agrees: the added path has that narHash and narSize.
			home := newHome(t)
			p := strings.TrimSpace(mustTrove(t, home, "add", src))
			var infos []nix.NixPathInfo
			mustDo(t, json.Unmarshal([]byte(mustTrove(t, home, "path-info", "--json", p)), &infos))
			if h, err := nix.ParseHash(infos[0].NarHash); err != nil || h.String() != want || infos[0].NarSize != uint64(nar.Len()) {
				t.Errorf("path-info says narHash %s narSize %d; nar hash says %s, %d bytes", infos[0].NarHash, infos[0].NarSize, want, nar.Len())
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	home := newHome(t)
	mustTrove(t, home, "add", writeHi(t))
	existing := t.TempDir()
	missing := filepath.Join(existing, "does-not-exist")
	target := filepath.Join(existing, "restored")

	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		msg   string
	}{
		{"add of a missing path", []string{"add", missing}, "", 1, "cannot add " + missing + ": no such file or directory"},
		{"add with an invalid name", []string{"add", "--name", ".-x", existing}, "", 1, "must not be"},
		{"add --name with two paths", []string{"add", "--name", "x", existing, existing}, "", 2, "--name names one path"},
		{"nar dump of a missing path", []string{"nar", "dump", missing}, "", 1, "dumping " + missing + ": no such file or directory"},
		{"nar hash of a missing path", []string{"nar", "hash", missing}, "", 1, "no such file or directory"},
		{"nar restore into an existing dir", []string{"nar", "restore", existing}, "", 1, existing + " already exists"},
		{"nar restore of garbage", []string{"nar", "restore", target}, "this is not a NAR", 1, "invalid NAR"},
		{"nar restore of nothing", []string{"nar", "restore", target}, "", 1, "invalid NAR"},
		{"bad store path", []string{"path-info", "not-a-store-path"}, "", 2, `store path "not-a-store-path"`},
		{"bad hash in store path", []string{"closure", "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"}, "", 2, `store path hash "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"`},
		{"path outside the store dir", []string{"verify", missing}, "", 2, "not in store directory /nix/store"},
		{"path not in the store", []string{"path-info", "/nix/store/00000000000000000000000000000000-foo"}, "", 1, "/nix/store/00000000000000000000000000000000-foo: path is not valid in the store"},
		{"root add of a path not in the store", []string{"root", "add", "00000000000000000000000000000000-foo"}, "", 1, "not valid"},
		{"verify without paths", []string{"verify"}, "", 2, "give store paths or --all"},
		{"verify with paths and --all", []string{"verify", "--all", hiPath}, "", 2, "give store paths or --all"},
		{"path-info without paths", []string{"path-info"}, "", 2, "give store paths or --all"},
		{"nar dump without a path", []string{"nar", "dump"}, "", 2, "wrong number of arguments (got none); usage: trove nar dump PATH"},
		{"nar restore with two dirs", []string{"nar", "restore", "a", "b"}, "", 2, "wrong number of arguments (got 2 arguments)"},
		{"closure without paths", []string{"closure"}, "", 2, "usage: trove closure STOREPATH..."},
		{"unknown command", []string{"frobnicate"}, "", 2, `unknown command "frobnicate" for "trove"`},
		{"unknown subcommand", []string{"nar", "frobnicate"}, "", 2, `unknown command "frobnicate" for "trove nar"`},
		{"unknown flag", []string{"gc", "--frobnicate"}, "", 2, "unknown flag: --frobnicate"},
		{"relative store dir", []string{"--store-dir", "nix/store", "gc"}, "", 2, "--store-dir \"nix/store\" must be a clean absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			stderr, code := runTroveIO(t, home, strings.NewReader(tc.stdin), &out, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			if !strings.HasPrefix(stderr, "trove: ") || !strings.Contains(stderr, tc.msg) {
				t.Errorf("stderr %q, want \"trove: ...%s...\"", stderr, tc.msg)
			}
			if strings.Count(stderr, tc.msg) != 1 {
				t.Errorf("stderr %q repeats the message", stderr)
			}
			if tc.code == 2 && !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("usage error %q does not point at --help", stderr)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on standard output", out.String())
			}
		})
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("a failed nar restore left %s behind: %v", target, err)
	}
}

func TestEveryCommandIsDocumented(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		t.Run(c.CommandPath(), func(t *testing.T) {
			if c.Short == "" || c.Long == "" || c.Example == "" {
				t.Errorf("%s lacks a Short, Long or Example", c.CommandPath())
			}
			if strings.HasSuffix(c.Short, ".") {
				t.Errorf("%s: Short %q ends with a period", c.CommandPath(), c.Short)
			}
			for _, line := range strings.Split(c.Example, "\n") {
				if !strings.HasPrefix(line, "  trove ") && !strings.HasPrefix(line, "  ") {
					t.Errorf("%s: example line %q is not indented", c.CommandPath(), line)
				}
			}
			stdout := mustTrove(t, "", append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "trove")), "--help")...)
			if !strings.Contains(stdout, "Usage:") || !strings.Contains(stdout, "Examples:") {
				t.Errorf("%s --help printed:\n%s", c.CommandPath(), stdout)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(newApp(nil, nil, nil, nil)))

	// With no command, trove shows its help, grouped.
	out := mustTrove(t, "")
	for _, want := range []string{"Store paths:", "Garbage collection:", "NAR archives:", "--home DIR", "--store-dir DIR"} {
		if !strings.Contains(out, want) {
			t.Errorf("trove with no arguments: help lacks %q:\n%s", want, out)
		}
	}
}

// openPTY returns the terminal end of a new pseudo-terminal, or skips the
// test where there is none.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("cannot unlock a pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("cannot name a pseudo-terminal: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("cannot open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

func TestNARRefusesTerminals(t *testing.T) {
	tty := openPTY(t)
	if !isTerminal(tty) {
		t.Fatal("isTerminal does not recognise a pseudo-terminal")
	}
	r, w, err := os.Pipe()
	mustDo(t, err)
	defer r.Close()
	defer w.Close()
	if isTerminal(w) || isTerminal(&strings.Builder{}) {
		t.Fatal("isTerminal takes a pipe or a buffer for a terminal")
	}
	src := writeHi(t)

	stderr, code := runTroveIO(t, "", strings.NewReader(""), tty, "nar", "dump", src)
	if code != 2 || !strings.Contains(stderr, "trove: refusing to write a binary NAR to a terminal; redirect standard output") {
		t.Errorf("nar dump to a terminal: exit %d, %q", code, stderr)
	}

	dst := filepath.Join(t.TempDir(), "dst")
	stderr, code = runTroveIO(t, "", tty, &strings.Builder{}, "nar", "restore", dst)
	if code != 2 || !strings.Contains(stderr, "reads a NAR from standard input, which is a terminal") {
		t.Errorf("nar restore from a terminal: exit %d, %q", code, stderr)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Errorf("nar restore from a terminal created %s", dst)
	}
}

// TestNixStoreChosenOnce: config.toml's store (or --store) chooses Nix's
// store when the home is made, the home records it, and later commands
// work on Nix's store without saying so; --store asking for the other
// store of a home is refused.
func TestNixStoreChosenOnce(t *testing.T) {
	nixtest.Require(t)
	home, root := newHome(t), t.TempDir()
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte("store = \"nix\"\nnix_store = \"local?root="+root+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := mustTrove(t, home, "init"); !strings.Contains(out, "nix store") {
		t.Fatalf("init with store = \"nix\" printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(home, "store")); err == nil {
		t.Fatal("a home on Nix's store has a tree directory")
	}
	// Nix adds the path; trove sees it at once, with nothing imported.
	nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--add", writeHi(t))
	if got := mustTrove(t, home, "path-info", hiPath); got != hiPath+"\n" {
		t.Fatalf("path-info of a path in Nix's store printed %q", got)
	}
	// Without config.toml, --nix-store alone names the store; --store
	// embedded is refused, saying why.
	os.Remove(filepath.Join(home, "config.toml"))
	if got := mustTrove(t, home, "--nix-store", "local?root="+root, "path-info", hiPath); got != hiPath+"\n" {
		t.Fatalf("path-info with --nix-store printed %q", got)
	}
	if _, stderr, code := runTrove(t, home, "--store", "embedded", "path-info", hiPath); code == 0 || !strings.Contains(stderr, "made for the nix store") {
		t.Fatalf("--store embedded on a home made for Nix's: exit %d, %q", code, stderr)
	}
}

// TestProfilePathEmbedded: on the embedded store, activate --profile
// PATH (relative paths resolved where trove runs) keeps the
// configuration's generations at PATH-N-link; later commands use the
// recorded path without being told, trove gc keeps what they point at,
// and another path for the same configuration, or the same path for
// another, is refused.
func TestProfilePathEmbedded(t *testing.T) {
	home := newHome(t)
	mustTrove(t, home, "key", "generate", "me-1")
	gens := [2]string{mustAdd(t, home, "cfg", "generation 1"), mustAdd(t, home, "cfg", "generation 2")}
	dir := t.TempDir()
	t.Chdir(dir)
	for i, p := range gens {
		mustTrove(t, home, "publish", "laptop", p)
		args := []string{"activate", "laptop"}
		if i == 0 {
			args = append(args, "--profile", "state/laptop-profile")
		}
		mustTrove(t, home, args...)
	}
	prof := filepath.Join(dir, "state", "laptop-profile")
	if link, err := os.Readlink(prof); err != nil || link != "laptop-profile-2-link" {
		t.Fatalf("%s → %q (%v), want laptop-profile-2-link", prof, link, err)
	}
	if _, err := os.Lstat(filepath.Join(home, "profiles", "laptop")); err == nil {
		t.Fatal("the profile was also made in the home's profiles directory")
	}
	if got, want := troveGenerations(t, home, "laptop"), []genLine{{1, false}, {2, true}}; !slices.Equal(got, want) {
		t.Fatalf("trove generations laptop: %v, want %v", got, want)
	}
	mustTrove(t, home, "rollback", "laptop")
	if got, want := troveGenerations(t, home, "laptop", "--profile", prof), []genLine{{1, true}, {2, false}}; !slices.Equal(got, want) {
		t.Fatalf("trove generations laptop after rollback: %v, want %v", got, want)
	}
	// Both generations are roots of trove's GC; a deleted one is not.
	if out := mustTrove(t, home, "gc"); !strings.HasPrefix(out, "0 paths removed") {
		t.Fatalf("trove gc removed generations of a profile outside the home: %q", out)
	}
	mustTrove(t, home, "generations", "delete", "laptop", "2")
	if out := mustTrove(t, home, "gc"); !strings.Contains(out, gens[1]) || strings.Contains(out, gens[0]) {
		t.Fatalf("trove gc after deleting generation 2 printed %q, want %s removed and %s kept", out, gens[1], gens[0])
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"another path for laptop", []string{"activate", "laptop", "--generation", "1", "--profile", filepath.Join(dir, "elsewhere")}, "does not move it"},
		{"another path for laptop, rollback", []string{"rollback", "laptop", "--profile", filepath.Join(dir, "elsewhere")}, "does not move it"},
		{"another path for laptop, listing", []string{"generations", "laptop", "--profile", filepath.Join(dir, "elsewhere")}, "does not move it"},
		{"laptop's path for desk", []string{"follow", "desk", "--activate", "--profile", prof}, "already the profile of laptop"},
		{"a directory", []string{"follow", "desk", "--profile", dir}, "is not a profile"},
		{"in the store", []string{"follow", "desk", "--profile", "/nix/store/profile"}, "cannot be in the store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, stderr, code := runTrove(t, home, tc.args...); code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("trove %s: exit %d, %q; want exit 1 saying %q", strings.Join(tc.args, " "), code, stderr, tc.want)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Fatal("a refused --profile made a profile")
	}
	// Following records the path too, before anything is activated.
	deskProf := filepath.Join(dir, "desk-profile")
	mustTrove(t, home, "follow", "desk", "--activate", "--profile", deskProf)
	recs, err := profile.LoadPaths(home)
	if err != nil || recs["desk"] != deskProf || recs["laptop"] != prof {
		t.Fatalf("recorded profile paths: %v (%v)", recs, err)
	}
}
