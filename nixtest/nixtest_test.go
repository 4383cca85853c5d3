package nixtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records Skip and Fatal instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skip(args ...any)                  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any)                 { f.failed = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestRequireWithoutNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no nix-store here
	for _, tc := range []struct {
		env        string
		wantSkip   bool
		wantFailed bool
	}{
		{env: "", wantSkip: true},
		{env: "0", wantSkip: true},
		{env: "1", wantFailed: true},
	} {
		t.Setenv(RequireEnv, tc.env)
		f := &fakeTB{TB: t}
		Require(f)
		if got := f.skipped != ""; got != tc.wantSkip {
			t.Errorf("%s=%q: skipped=%v (%q), want %v", RequireEnv, tc.env, got, f.skipped, tc.wantSkip)
		}
		if got := f.failed != ""; got != tc.wantFailed {
			t.Errorf("%s=%q: failed=%v (%q), want %v", RequireEnv, tc.env, got, f.failed, tc.wantFailed)
		}
		if msg := f.skipped + f.failed; !strings.Contains(msg, MissingMessage) {
			t.Errorf("%s=%q: message %q does not say %q", RequireEnv, tc.env, msg, MissingMessage)
		}
	}
}

func TestRequireWithNix(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "nix-store")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	t.Setenv(RequireEnv, "1")
	f := &fakeTB{TB: t}
	Require(f)
	if f.skipped != "" || f.failed != "" {
		t.Fatalf("with nix-store on PATH: skipped %q, failed %q", f.skipped, f.failed)
	}
}

func TestRunCmdReportsStderr(t *testing.T) {
	f := &fakeTB{TB: t}
	RunCmd(f, exec.Command("/bin/sh", "-c", "echo out; echo 'the reason' >&2; exit 3"))
	if !strings.Contains(f.failed, "the reason") || !strings.Contains(f.failed, "exit status 3") {
		t.Fatalf("failure message %q lacks stderr or exit status", f.failed)
	}
	f = &fakeTB{TB: t}
	if out := RunCmd(f, exec.Command("/bin/sh", "-c", "echo out")); string(out) != "out\n" || f.failed != "" {
		t.Fatalf("RunCmd = %q, failed %q", out, f.failed)
	}
}

func TestIsolate(t *testing.T) {
	home := os.Getenv("XDG_CACHE_HOME")
	Isolate(t)
	for _, k := range []string{"XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"} {
		v := os.Getenv(k)
		if fi, err := os.Stat(v); err != nil || !fi.IsDir() || v == home {
			t.Errorf("%s=%q after Isolate: not a fresh directory (%v)", k, v, err)
		}
	}
}

func TestCommandIsolatesCache(t *testing.T) {
	Require(t)
	out := string(RunCmd(t, Command(t, "/bin/sh", "-c", `echo "$XDG_CACHE_HOME"`)))
	dir := strings.TrimSpace(out)
	if dir == "" || dir == os.Getenv("XDG_CACHE_HOME") {
		t.Fatalf("command saw XDG_CACHE_HOME=%q, want a temporary directory", dir)
	}
}

// TestBuildFixtureClosure checks the fixture against the paths recorded in
// docs/reference/nix.md §3 (x86_64-linux).
func TestBuildFixtureClosure(t *testing.T) {
	Require(t)
	got := BuildFixtureClosure(t)
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("built %q; the recorded paths are for x86_64-linux", got)
	}
	want := []string{
		"/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf",
		"/nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid",
		"/nix/store/lyiynp4xdriqg0003qk7cpv6x88pxjvq-p2p-top",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("BuildFixtureClosure = %q, want %q", got, want)
	}
	for _, p := range got {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("fixture path missing after build: %v", err)
		}
	}
}
