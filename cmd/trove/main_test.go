package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/store"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a second process holding a store open:
	// see holdStore.
	if home := os.Getenv(holdStoreEnv); home != "" {
		os.Exit(holdStore(home))
	}
	// Or as trove itself: see troveProcess.
	if os.Getenv(beTroveEnv) != "" {
		main()
	}
	os.Exit(m.Run())
}

// runTrove runs trove in-process with args (after --home home, unless home
// is empty) and returns what it printed and its exit status.
func runTrove(t testing.TB, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out bytes.Buffer
	stderr, code = runTroveIO(t, home, strings.NewReader(""), &out, args...)
	return out.String(), stderr, code
}

// runTroveIO is runTrove with a given standard input and output.
func runTroveIO(t testing.TB, home string, stdin io.Reader, stdout io.Writer, args ...string) (stderr string, code int) {
	t.Helper()
	var errb bytes.Buffer
	if home != "" {
		args = append([]string{"--home", home}, args...)
	}
	env := func(string) string { return "" } // nothing leaks in from the test's environment
	code = run(context.Background(), newApp(stdin, stdout, &errb, env), args)
	stderr = errb.String()
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("trove %s printed a Go stack or panic:\n%s", strings.Join(args, " "), stderr)
	}
	return stderr, code
}

// mustTrove runs trove and fails the test unless it exits 0.
func mustTrove(t testing.TB, home string, args ...string) string {
	t.Helper()
	stdout, stderr, code := runTrove(t, home, args...)
	if code != 0 {
		t.Fatalf("trove %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// mustAdd adds a file holding content through trove add and returns its
// store path.
func mustAdd(t *testing.T, home, name, content string) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{name: content})
	return strings.TrimSpace(mustTrove(t, home, "add", filepath.Join(dir, name)))
}

// newHome returns a fresh directory for a trove home. Store trees are
// read-only; the cleanup makes them writable so the directory can be removed
// by a user other than root.
func newHome(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { makeWritable(dir) })
	return filepath.Join(dir, "home")
}

func makeWritable(root string) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// writeTree creates files under dir from a map of relative path to
// content; a content starting with "->" makes a symlink to the rest, a path
// ending in "*" an executable file, one ending in "/" an empty directory.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		exec := strings.HasSuffix(rel, "*")
		rel = strings.TrimSuffix(rel, "*")
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(rel, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), p)
		case exec:
			err = os.WriteFile(p, []byte(content), 0o755)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// sampleTree is a small tree with every kind of entry.
var sampleTree = map[string]string{
	"README":         "hello\n",
	"bin/run*":       "#!/bin/sh\necho run\n",
	"empty":          "",
	"lib/data.txt":   strings.Repeat("data ", 1000),
	"lib/link":       "->data.txt",
	"lib/dangling":   "->/nowhere/at/all",
	"share/doc/":     "",
	"share/Z-first":  "sorting trap: upper case sorts first",
	"share/a-second": "b",
}

// openStore opens the store in home directly, for tests that set up state
// the CLI cannot make (paths with references), and closes it at cleanup.
func openStore(t testing.TB, home string) *store.Store {
	t.Helper()
	s, err := store.Open(home, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addWithRefs adds an input-addressed path named name holding a file with
// content, referring to refs, through the store API, and returns it.
func addWithRefs(t testing.TB, s *store.Store, name, content string, refs ...nix.Path) nix.Path {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	var nar bytes.Buffer
	if _, err := nix.DumpNAR(&nar, src); err != nil {
		t.Fatal(err)
	}
	p, err := nix.MakePath(s.StoreDir(), "output:out", sha256.Sum256([]byte(name)), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddNAR(context.Background(), &nix.PathInfo{Path: p, References: refs}, &nar); err != nil {
		t.Fatal(err)
	}
	return p
}
