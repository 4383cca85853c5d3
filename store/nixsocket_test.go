package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/store/storetest"
)

// The Nix backend as a multi-user install has it: the store reached over
// the socket of a listening nix-daemon, which trusts root only.

// startNixDaemon runs a nix-daemon listening on a socket of its own, on a
// fresh chroot store.
func startNixDaemon(t testing.TB) *nixtest.Daemon {
	t.Helper()
	nixtest.RequireDaemon(t)
	nixtest.Isolate(t)
	root := t.TempDir()
	t.Cleanup(func() { nix.RemoveTree(root) })
	return nixtest.StartDaemon(t, root)
}

// openNixSocket opens a store, in a fresh home, on the Nix store d serves,
// through d's socket.
func openNixSocket(t testing.TB, d *nixtest.Daemon) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{Kind: nixSocketKind(d.Socket, d.Root)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func nixSocketKind(socket, root string) store.Kind {
	return store.Kind{Backend: store.BackendNix, Nix: store.NixOptions{Socket: socket, Root: root}}
}

// TestConformanceNixSocket runs the suite against Nix's own store reached
// over the daemon's socket.
func TestConformanceNixSocket(t *testing.T) {
	storetest.Run(t, func(t testing.TB) storetest.Store { return openNixSocket(t, startNixDaemon(t)) })
}

// unsignedNAR is an input-addressed path (no content address, so only
// a signature, or the daemon's trust in the client, lets Nix take it) and
// its NAR.
func unsignedNAR(t testing.TB, name string) (*nix.PathInfo, []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("unsigned "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var nar bytes.Buffer
	if _, err := nix.DumpNAR(&nar, file); err != nil {
		t.Fatal(err)
	}
	p, err := nix.MakePath(nix.DefaultStoreDir, "output:out", nix.Hash{7}, name)
	if err != nil {
		t.Fatal(err)
	}
	return &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len())}, nar.Bytes()
}

// Environment of TestNixUntrustedClient, run as nobody.
const (
	envSocket = "TROVE_TEST_NIX_SOCKET"
	envRoot   = "TROVE_TEST_NIX_ROOT"
)

// TestNixUntrustedUser: a user the daemon does not trust may connect
// (allowed-users = *) but not add an unsigned input-addressed path:
// trove asks with dontCheckSigs, Nix 2.8's daemon drops that flag for
// such users and its store refuses the path for want of a signature.
// Nothing is registered, and trove says how to fix it. A content-addressed
// path needs no signature and is added.
func TestNixUntrustedUser(t *testing.T) {
	d := startNixDaemon(t)
	out := nixtest.RunAsNobody(t, "TestNixUntrustedClient", envSocket+"="+d.Socket, envRoot+"="+d.Root)
	t.Log(out)
	if log := d.Log(); !strings.Contains(log, "user nobody") || strings.Contains(log, "user nobody (trusted)") {
		t.Errorf("the daemon did not take nobody as an untrusted user:\n%s", log)
	}
	s := openNixSocket(t, d)
	refused, _ := unsignedNAR(t, "untrusted")
	if ok, err := s.IsValid(refused.Path); err != nil || ok {
		t.Errorf("the refused path: valid %v, %v", ok, err)
	}
	if _, err := os.Lstat(filepath.Join(d.Root, refused.Path.Abs(nix.DefaultStoreDir))); err == nil {
		t.Errorf("the refused path's tree is in the store")
	}
	var added nix.Path
	for _, line := range strings.Split(out, "\n") {
		if _, abs, ok := strings.Cut(line, ": added "); ok {
			p, err := nix.ParsePath(nix.DefaultStoreDir, abs)
			if err != nil {
				t.Fatal(err)
			}
			added = p
		}
	}
	if ok, err := s.IsValid(added); err != nil || !ok {
		t.Errorf("the content-addressed path %s nobody added: valid %v, %v", added, ok, err)
	}
	// Root, trusted, adds the same unsigned path.
	info, nar := unsignedNAR(t, "untrusted")
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar)); err != nil {
		t.Fatalf("root adding the path nobody could not: %v", err)
	}
}

// TestNixUntrustedClient is TestNixUntrustedUser's client, run as nobody.
func TestNixUntrustedClient(t *testing.T) {
	if !nixtest.AsNobody(t.Name()) {
		t.Skip("run as nobody by TestNixUntrustedUser")
	}
	s, err := store.Open(t.TempDir(), store.Options{Kind: nixSocketKind(os.Getenv(envSocket), os.Getenv(envRoot))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	info, nar := unsignedNAR(t, "untrusted")
	_, err = s.AddNAR(ctx, info, bytes.NewReader(nar))
	t.Logf("adding an unsigned path: %v", err)
	if err == nil {
		t.Fatal("the daemon added an unsigned path for a user it does not trust")
	}
	for _, want := range []string{
		"the Nix daemon refused " + info.Path.Abs(nix.DefaultStoreDir),
		"lacks a valid signature",
		"add this user to trusted-users in nix.conf",
		"add the publisher's key to Nix's trusted-public-keys",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	if ok, err := s.IsValid(info.Path); err != nil || ok {
		t.Errorf("after the refusal: valid %v, %v", ok, err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if err := os.WriteFile(dir, []byte("content-addressed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pi, err := s.AddTree(ctx, dir, "ca")
	if err != nil {
		t.Fatalf("adding a content-addressed path: %v", err)
	}
	t.Logf("added %s", pi.Path.Abs(nix.DefaultStoreDir))
}

// The ways openNix fails to reach a Nix daemon, as a user sees them.
var nixUnreachable = []struct {
	name string
	root bool // as root; else as another user
	kind func(t *testing.T) store.Kind
	want string
}{
	{"no socket, not root", false, func(t *testing.T) store.Kind {
		return nixSocketKind(filepath.Join(t.TempDir(), "none"), "")
	}, "start it (`systemctl start nix-daemon`)"},
	{"dead socket, not root", false, func(t *testing.T) store.Kind {
		return nixSocketKind(notListening(t), "")
	}, "start it (`systemctl start nix-daemon`)"},
	{"dead socket, root, no nix-daemon on PATH", true, func(t *testing.T) store.Kind {
		t.Setenv("PATH", t.TempDir())
		return nixSocketKind(notListening(t), "")
	}, "nix-daemon is not on PATH"},
	{"no socket, no nix-daemon on PATH", true, func(t *testing.T) store.Kind {
		t.Setenv("PATH", t.TempDir())
		return nixSocketKind(filepath.Join(t.TempDir(), "none"), "")
	}, "Nix is not installed"},
	{"a store URI, no nix-daemon on PATH", true, func(t *testing.T) store.Kind {
		t.Setenv("PATH", t.TempDir())
		k, err := store.ParseKind(store.BackendNix, "local?root="+t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return k
	}, "Nix is not installed"},
}

// notListening returns a path where a socket was but none listens: what
// a stopped daemon leaves.
func notListening(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "socket")
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	return p // connecting to a file is refused, as to a dead socket
}

func openUnreachable(t *testing.T, root bool) {
	for _, tc := range nixUnreachable {
		if tc.root != root {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.Open(t.TempDir(), store.Options{Kind: tc.kind(t)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// TestNixDaemonUnreachable: when the daemon's socket does not answer,
// opening the Nix backend says what to do: start the daemon (not root),
// or put nix-daemon on PATH (root, who would run a private one), or
// install Nix. The cases for another user run as nobody when this is root.
func TestNixDaemonUnreachable(t *testing.T) {
	nixtest.RequireDaemon(t)
	t.Run("root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not root")
		}
		openUnreachable(t, true)
	})
	t.Run("user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			openUnreachable(t, false)
			return
		}
		t.Log(nixtest.RunAsNobody(t, "TestNixDaemonUnreachableAsUser"))
	})
}

// TestNixDaemonUnreachableAsUser is the user half of
// TestNixDaemonUnreachable, run as nobody.
func TestNixDaemonUnreachableAsUser(t *testing.T) {
	if !nixtest.AsNobody(t.Name()) {
		t.Skip("run as nobody by TestNixDaemonUnreachable")
	}
	openUnreachable(t, false)
}

// TestNixDaemonFallback: root, finding no daemon at the socket, runs a
// private `nix-daemon --stdio` (here one that acts on a chroot store,
// not the machine's).
func TestNixDaemonFallback(t *testing.T) {
	nixtest.RequireDaemon(t)
	if os.Geteuid() != 0 {
		t.Skip("the fallback is root's")
	}
	nixtest.Isolate(t)
	real, err := exec.LookPath("nix-daemon")
	if err != nil {
		t.Fatal(err)
	}
	root, bin := t.TempDir(), t.TempDir()
	t.Cleanup(func() { nix.RemoveTree(root) })
	args := filepath.Join(bin, "args")
	script := "#!/bin/sh\necho \"$@\" >> " + args + "\nexec " + real + " \"$@\" --store 'local?root=" + root + "'\n"
	if err := os.WriteFile(filepath.Join(bin, "nix-daemon"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	s, err := store.Open(t.TempDir(), store.Options{Kind: nixSocketKind(filepath.Join(t.TempDir(), "none"), root)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	info, nar := unsignedNAR(t, "fallback")
	if _, err := s.AddNAR(context.Background(), info, bytes.NewReader(nar)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out := nixtest.Run(t, "nix-store", "--store", "local?root="+root, "--query", "--hash", info.Path.Abs(nix.DefaultStoreDir)); !strings.Contains(string(out), "sha256:") {
		t.Errorf("nix-store --query --hash: %s", out)
	}
	if b, err := os.ReadFile(args); err != nil || strings.TrimSpace(strings.Split(string(b), "\n")[0]) != "--stdio" {
		t.Errorf("nix-daemon ran with %q, %v; want --stdio", b, err)
	}
}

// TestNixUserNotAllowed: a user the daemon does not allow to connect
// (allowed-users) is told so, not to start the daemon: nix-daemon accepts
// the connection and closes it at once.
func TestNixUserNotAllowed(t *testing.T) {
	nixtest.RequireDaemon(t)
	nixtest.Isolate(t)
	root := t.TempDir()
	t.Cleanup(func() { nix.RemoveTree(root) })
	d := nixtest.StartDaemon(t, root, "allowed-users = root")
	t.Log(nixtest.RunAsNobody(t, "TestNixUserNotAllowedClient", envSocket+"="+d.Socket, envRoot+"="+d.Root))
	if log := d.Log(); !strings.Contains(log, "user 'nobody' is not allowed to connect") {
		t.Errorf("the daemon did not refuse nobody:\n%s", log)
	}
}

// TestNixUserNotAllowedClient is TestNixUserNotAllowed's client, run as
// nobody.
func TestNixUserNotAllowedClient(t *testing.T) {
	if !nixtest.AsNobody(t.Name()) {
		t.Skip("run as nobody by TestNixUserNotAllowed")
	}
	_, err := store.Open(t.TempDir(), store.Options{Kind: nixSocketKind(os.Getenv(envSocket), os.Getenv(envRoot))})
	t.Logf("%v", err)
	if err == nil || !strings.Contains(err.Error(), "turned this user away") || !strings.Contains(err.Error(), "allowed-users") ||
		strings.Contains(err.Error(), "systemctl start") {
		t.Fatalf("got %v, want an error saying the daemon turned this user away (allowed-users)", err)
	}
}
