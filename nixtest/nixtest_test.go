package nixtest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
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

// TestStartDaemon: the daemon answers on its socket, acts on its chroot
// store, and is gone with its socket and per-connection processes when
// the test that started it ends.
func TestStartDaemon(t *testing.T) {
	RequireDaemon(t)
	root := t.TempDir()
	var d *Daemon
	t.Run("running", func(t *testing.T) {
		d = StartDaemon(t, root)
		if fi, err := os.Stat(filepath.Dir(d.Socket)); err != nil || fi.Mode().Perm()&0o005 != 0o005 {
			t.Errorf("the socket's directory is not open to other users: %v, %v", fi.Mode(), err)
		}
		for range 2 { // one connection left open for the cleanup to end
			c, err := net.Dial("unix", d.Socket)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			// The worker protocol's handshake: WORKER_MAGIC_1 in, WORKER_MAGIC_2 out.
			if _, err := c.Write(binary.LittleEndian.AppendUint64(nil, 0x6e697863)); err != nil {
				t.Fatal(err)
			}
			var reply [8]byte
			if _, err := io.ReadFull(c, reply[:]); err != nil || binary.LittleEndian.Uint64(reply[:]) != 0x6478696f {
				t.Fatalf("handshake reply %x, %v", reply, err)
			}
		}
		if len(children(d.cmd.Process.Pid)) == 0 {
			t.Error("no per-connection process for open connections")
		}
		if _, err := os.Stat(filepath.Join(root, "nix/var/nix/db/db.sqlite")); err != nil {
			t.Errorf("the daemon did not open the chroot store: %v", err)
		}
	})
	if d == nil {
		t.FailNow()
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err == nil {
		t.Errorf("nix-daemon %d still runs", d.cmd.Process.Pid)
	}
	if _, err := os.Stat(filepath.Dir(d.Socket)); !os.IsNotExist(err) {
		t.Errorf("socket directory left behind: %v", err)
	}
	if kids := children(d.cmd.Process.Pid); len(kids) > 0 {
		t.Errorf("processes of the daemon left: %v", kids)
	}
}
