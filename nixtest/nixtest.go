package nixtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// MissingMessage is what Require reports when nix-store is not on PATH.
const MissingMessage = "nix-store not found; install nix-bin to run Nix interop tests"

// RequireEnv is the environment variable that turns a missing Nix from a
// skip into a failure.
const RequireEnv = "TROVE_REQUIRE_NIX"

// Require skips the test when nix-store is not on PATH, or fails it when
// TROVE_REQUIRE_NIX=1.
func Require(t testing.TB) {
	t.Helper()
	if path, err := exec.LookPath("nix-store"); err == nil {
		err := usableCached(path)
		if err == nil {
			return
		}
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(err.Error() + " (" + RequireEnv + "=1 is set)")
			return
		}
		t.Skip(err.Error())
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(MissingMessage + " (" + RequireEnv + "=1 is set)")
		return
	}
	t.Skip(MissingMessage)
}

var usableMemo sync.Map // nix-store's path → usable's answer

// usableCached is usable, asked once per nix-store a process finds: a
// test that starts several daemons checks Nix once.
func usableCached(nixStore string) error {
	if err, ok := usableMemo.Load(nixStore); ok {
		err, _ := err.(error)
		return err
	}
	err := usable()
	usableMemo.Store(nixStore, err)
	return err
}

// usable reports why this user cannot use the installed Nix's store (as
// a normal user without nix-daemon access), nil if it can. It mirrors
// store.NixUsable, which this package cannot import (store's own tests
// import nixtest).
func usable() error {
	var stderr bytes.Buffer
	cmd := exec.Command("nix-store", "--query", "--hash", "/nix/store/00000000000000000000000000000000-trove-probe")
	cmd.Stderr = &stderr
	_ = cmd.Run() // the path is never valid; only how it fails matters
	if msg := strings.TrimSpace(stderr.String()); strings.Contains(msg, "Permission denied") || strings.Contains(msg, "cannot connect") {
		return errors.New("Nix is installed but this user cannot use its store (" + msg + "); run the Nix interop tests as root or with nix-daemon access")
	}
	return nil
}

// env returns XDG_CACHE_HOME, XDG_CONFIG_HOME and XDG_DATA_HOME pointing
// into a fresh temporary directory of t.
func env(t testing.TB) []string {
	d := t.TempDir()
	var kv []string
	for _, k := range []string{"XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"} {
		dir := filepath.Join(d, strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(k, "XDG_"), "_HOME")))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		kv = append(kv, k+"="+dir)
	}
	// Tests run offline: without this, a Nix command that meets a path it
	// does not have asks cache.nixos.org and retries for seconds. Options
	// given on a command line still win.
	kv = append(kv, "NIX_CONFIG=substituters =")
	return kv
}

// Isolate points XDG_CACHE_HOME, XDG_CONFIG_HOME and XDG_DATA_HOME of the
// whole test process at a temporary directory until the test ends, for code
// under test that starts Nix itself. Like t.Setenv, it cannot be used in
// parallel tests.
func Isolate(t testing.TB) {
	t.Helper()
	for _, kv := range env(t) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Command prepares a Nix command with an isolated environment (see Isolate).
// The caller may set Stdin and friends before running it with RunCmd.
func Command(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	Require(t)
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env(t)...)
	return cmd
}

// RunCmd runs cmd and returns its stdout, failing the test with its stderr
// if it does not succeed.
func RunCmd(t testing.TB, cmd *exec.Cmd) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// Run runs a Nix command and returns its stdout, failing the test with its
// stderr if it does not succeed.
func Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	return RunCmd(t, Command(t, name, args...))
}

// FixtureNix is the offline three-derivation closure of docs/reference/nix.md §3:
// p2p-top refers to p2p-mid and p2p-leaf, p2p-mid to p2p-leaf. It needs no
// nixpkgs and no network (the builders use the host's /bin tools).
const FixtureNix = `let
  mk = name: script: derivation {
    inherit name; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" script ];
  };
  leaf = mk "p2p-leaf" ''echo "leaf data" > $out'';
  mid  = mk "p2p-mid"  ''echo "mid depends on ${leaf}" > $out'';
  top  = mk "p2p-top"  ''
    /bin/mkdir -p $out/bin
    echo "#!/bin/sh" > $out/bin/hello
    echo "echo top uses ${mid}" >> $out/bin/hello
    /bin/chmod +x $out/bin/hello
    /bin/ln -s ${leaf} $out/leaf-link
  '';
in top
`

// BuildFixtureClosure builds FixtureNix into the real Nix store, offline, and
// returns the full store paths of its closure, dependencies first: leaf, mid,
// and last the top output that nix-build printed.
func BuildFixtureClosure(t testing.TB) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "closure.nix")
	if err := os.WriteFile(file, []byte(FixtureNix), 0o644); err != nil {
		t.Fatal(err)
	}
	out := Run(t, "nix-build", file, "--no-out-link",
		"--option", "substituters", "", "--option", "sandbox", "false")
	top := strings.TrimSpace(string(out))
	if top == "" || strings.ContainsAny(top, "\n ") {
		t.Fatalf("nix-build %s printed %q, want one store path", file, out)
	}
	// nix-store -qR prints the closure in reverse topological order,
	// dependencies before the paths that refer to them.
	closure := strings.Fields(string(Run(t, "nix-store", "--query", "--requisites", top)))
	if len(closure) != 3 || closure[len(closure)-1] != top {
		t.Fatalf("closure of %s is %q; want 3 paths ending with it", top, closure)
	}
	return closure
}
