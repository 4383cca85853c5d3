package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBundleOffline carries a published configuration from A to B in a
// bundle file, through the command line, and activates it on B.
func TestBundleOffline(t *testing.T) {
	homeA, homeB := newHome(t), newHome(t)
	pub := strings.TrimSpace(mustTrove(t, homeA, "key", "generate", "laptop-1"))
	p := strings.TrimSpace(mustTrove(t, homeA, "add", writeConfig(t, t.TempDir(), "offline")))
	mustTrove(t, homeA, "publish", "laptop", p, "--activate", "bin/activate")
	usb := t.TempDir()
	file := filepath.Join(usb, "laptop.trove")
	out := mustTrove(t, homeA, "bundle", "create", "-o", file, "laptop")
	if !strings.Contains(out, "1 path") || !strings.Contains(out, "laptop@1") {
		t.Fatalf("bundle create printed %q", out)
	}
	if left, _ := filepath.Glob(filepath.Join(usb, ".*tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	mustTrove(t, homeB, "trust", "add", pub, "--config", "laptop")
	var rep struct {
		PathsAdded int `json:"pathsAdded"`
		Manifests  []struct {
			Name string `json:"name"`
			New  bool   `json:"new"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(mustTrove(t, homeB, "bundle", "import", file, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.PathsAdded != 1 || len(rep.Manifests) != 1 || !rep.Manifests[0].New {
		t.Fatalf("import report %+v", rep)
	}
	_, stderr, code := runTrove(t, homeB, "activate", "laptop", "--run")
	if code != 0 || !strings.Contains(stderr, "activating offline") {
		t.Fatalf("activate: exit %d, stderr %q", code, stderr)
	}
	if g := currentGen(t, homeB); g != 1 {
		t.Fatalf("B is at generation %d", g)
	}
	mustTrove(t, homeB, "verify", "--all")
	if out := mustTrove(t, homeB, "bundle", "import", file); !strings.Contains(out, "added 0 paths") || !strings.Contains(out, "skipped 1") {
		t.Fatalf("second import printed %q", out)
	}

	// Damage in a NAR: nothing becomes valid, and the message says why.
	b, _ := os.ReadFile(file)
	b[len(b)-100] ^= 1
	bad := filepath.Join(usb, "bad.trove")
	os.WriteFile(bad, b, 0o644)
	homeC := newHome(t)
	mustTrove(t, homeC, "trust", "add", pub, "--config", "laptop")
	_, stderr, code = runTrove(t, homeC, "bundle", "import", bad)
	if code != 1 || !strings.Contains(stderr, "hash mismatch") {
		t.Fatalf("damaged bundle: exit %d, stderr %q", code, stderr)
	}
	if out := mustTrove(t, homeC, "manifest", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("a damaged bundle recorded %s", out)
	}

	// nix-export: one path, then the end marker.
	exp := filepath.Join(usb, "laptop.nixexport")
	mustTrove(t, homeA, "bundle", "create", "--format", "nix-export", "-o", exp, "laptop")
	e, _ := os.ReadFile(exp)
	if len(e) < 16 || binary.LittleEndian.Uint64(e) != 1 || !bytes.Equal(e[len(e)-8:], make([]byte, 8)) {
		t.Fatalf("nix-export file of %d bytes does not look like one", len(e))
	}
}

func TestBundleUsage(t *testing.T) {
	home := newHome(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bundle", "create", "laptop"}, 2, "-o FILE"},
		{[]string{"bundle", "create", "-o", "x.trove"}, 2, "wrong number of arguments"},
		{[]string{"bundle", "create", "-o", "x.trove", "--format", "zip", "laptop"}, 2, "--format"},
		{[]string{"bundle", "create", "-o", "x.trove", "no/such"}, 2, "neither a store path nor"},
		{[]string{"bundle", "create", "-o", filepath.Join(t.TempDir(), "x.trove"), "laptop"}, 1, "no such configuration"},
		{[]string{"bundle", "import", filepath.Join(t.TempDir(), "missing.trove")}, 1, "no such file"},
		{[]string{"bundle", "import", "/etc/hostname"}, 1, "not a trove bundle"},
		{[]string{"bundle", "frobnicate"}, 2, "unknown command"},
	} {
		_, stderr, code := runTrove(t, home, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("trove %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}

// With an agent running, bundle import goes through it.
func TestBundleImportThroughAgent(t *testing.T) {
	homeA, homeB := newHome(t), newHome(t)
	p := strings.TrimSpace(mustTrove(t, homeA, "add", writeConfig(t, t.TempDir(), "agent")))
	file := filepath.Join(t.TempDir(), "p.trove")
	mustTrove(t, homeA, "bundle", "create", "-o", file, p) // content-addressed: needs no key
	ag := startAgent(t, homeB)
	if out := mustTrove(t, homeB, "bundle", "import", file); !strings.Contains(out, "added 1 path") {
		t.Fatalf("import printed %q", out)
	}
	if ok, _ := ag.Store.IsValid(mustParse(t, filepath.Base(p))); !ok {
		t.Fatal("the path is not in the agent's store")
	}
}
