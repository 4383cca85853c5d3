package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nixtest"
)

func TestImportCacheCommand(t *testing.T) {
	nixtest.Require(t)
	closure := nixtest.BuildFixtureClosure(t)
	top := closure[len(closure)-1]
	home := newHome(t)
	nix := func(args ...string) {
		nixtest.Run(t, "nix", append([]string{"--extra-experimental-features", "nix-command"}, args...)...)
	}

	// Unsigned: refused, with what to do about it; nothing is imported.
	unsigned := t.TempDir()
	nix("copy", "--to", "file://"+unsigned+"?compression=xz", top)
	_, stderr, code := runTrove(t, home, "import-cache", "file://"+unsigned, top)
	if code != 1 || !strings.Contains(stderr, "trove trust add") || !strings.Contains(stderr, "--no-check-sigs") {
		t.Fatalf("unsigned cache: exit %d, %q", code, stderr)
	}
	if _, _, code := runTrove(t, home, "path-info", closure[0]); code != 1 {
		t.Fatal("a path of the refused cache is in the store")
	}

	// Signed by a key trove trusts; the cache given as a plain directory.
	pub := strings.TrimSpace(mustTrove(t, home, "key", "generate", "cache-1"))
	mustTrove(t, home, "trust", "add", pub)
	signed := t.TempDir()
	nix("copy", "--to", "file://"+signed+"?compression=zstd&secret-key="+filepath.Join(home, "keys", "cache-1.secret"), top)
	if out := mustTrove(t, home, "import-cache", signed, top); !strings.HasPrefix(out, "imported 3 paths, ") {
		t.Fatalf("import-cache printed %q", out)
	}
	if out := mustTrove(t, home, "import-cache", "file://"+unsigned, top); !strings.HasPrefix(out, "nothing to import") {
		t.Fatalf("a second import-cache printed %q", out)
	}
	if got := mustTrove(t, home, "verify", "--all"); got != "checked 3 paths, no problems\n" {
		t.Fatalf("verify after import-cache: %q", got)
	}

	// --no-check-sigs believes the unsigned cache.
	home2 := newHome(t)
	out, stderr, code := runTrove(t, home2, "import-cache", "--no-check-sigs", "file://"+unsigned, top)
	if code != 0 || !strings.HasPrefix(out, "imported 3 paths") || !strings.Contains(stderr, "--no-check-sigs") {
		t.Fatalf("--no-check-sigs: exit %d %q %q", code, out, stderr)
	}
}

func TestImportCacheArguments(t *testing.T) {
	home := newHome(t)
	for _, args := range [][]string{
		{"import-cache"},
		{"import-cache", "file:///tmp"},
		{"import-cache", "file:///tmp", "not-a-store-path"},
	} {
		if _, stderr, code := runTrove(t, home, args...); code != 2 {
			t.Errorf("trove %s: exit %d, %q", strings.Join(args, " "), code, stderr)
		}
	}
	p := "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
	for _, url := range []string{"ftp://x/y", "/does/not/exist"} {
		if _, stderr, code := runTrove(t, home, "import-cache", url, p); code != 1 || !strings.Contains(stderr, "cache") {
			t.Errorf("import-cache %s: exit %d, %q", url, code, stderr)
		}
	}

	a := newApp(nil, nil, nil, func(string) string { return "" })
	a.cwd = "/work"
	for in, want := range map[string]string{
		"file:///abs/dir":         "file:///abs/dir",
		"file://rel/dir":          "file:///work/rel/dir",
		"https://cache.nixos.org": "https://cache.nixos.org",
	} {
		if got := a.cacheURL(in); got != want {
			t.Errorf("cacheURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAgentCacheFlags(t *testing.T) {
	home := newHome(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cache-from-peers"}, "needs --cache-listen"},
		{[]string{"--cache-key", "k"}, "needs --cache-listen"},
		{[]string{"--cache-listen", "4808"}, "HOST:PORT"},
		{[]string{"--cache-listen", "127.0.0.1:4808", "--cache-timeout", "0s"}, "positive duration"},
	} {
		args := append([]string{"agent", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0"}, tc.args...)
		if _, stderr, code := runTrove(t, home, args...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("trove %s: exit %d, %q", strings.Join(args, " "), code, stderr)
		}
	}

	// The cache's key: --cache-key NAME, else the only key, else none.
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	cmd := newAgentCmd(newApp(nil, nil, nil, nil))
	cmd.ParseFlags([]string{"--cache-listen", "127.0.0.1:0"})
	config := func(key string) (string, error) {
		c := cacheFlags{listen: "127.0.0.1:0", key: key, timeout: 1}
		cc, err := c.config(cmd, home, log)
		if err != nil || cc.Key == nil {
			return "", err
		}
		return cc.Key.Name, nil
	}
	os.MkdirAll(home, 0o755)
	if name, err := config(""); name != "" || err != nil || !strings.Contains(logged.String(), "trove key generate") {
		t.Fatalf("no key: %q %v, logged %q", name, err, logged.String())
	}
	mustTrove(t, home, "key", "generate", "one")
	if name, err := config(""); name != "one" || err != nil {
		t.Fatalf("one key: %q %v", name, err)
	}
	mustTrove(t, home, "key", "generate", "two")
	if _, err := config(""); err == nil || !strings.Contains(err.Error(), "--cache-key") {
		t.Fatalf("two keys: %v", err)
	}
	if name, err := config("two"); name != "two" || err != nil {
		t.Fatalf("--cache-key two: %q %v", name, err)
	}
	if _, err := config("three"); err == nil {
		t.Fatal("--cache-key of a missing key accepted")
	}
}
