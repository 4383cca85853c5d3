package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nixtest"
)

// moduleFile is the NixOS module shipped in the repository.
var moduleFile, _ = filepath.Abs("../../nixos/module.nix")

func TestNixOSModuleParses(t *testing.T) {
	nixtest.Require(t)
	nixtest.Run(t, "nix-instantiate", "--parse", moduleFile)
}

// stubEval evaluates the module with settings for services.trove, against
// a stand-in for nixpkgs' lib with the few functions it uses (nixpkgs is
// not at hand offline), and returns what the module configures.
const stubEval = `{ settingsFile, moduleFile }:
let
  lib = {
    mkEnableOption = d: { default = false; };
    mkOption = o: o;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    types = { package = "package"; str = "str"; bool = "bool"; listOf = t: "list"; nullOr = t: "nullOr"; enum = l: "enum"; };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: l: if c then l else [ ];
    concatMap = f: l: builtins.concatLists (map f l);
    escapeShellArgs = l: builtins.concatStringsSep " " (map (a: "'" + a + "'") l);
    boolToString = b: if b then "true" else "false";
  };
  module = import moduleFile { inherit config lib; pkgs = { }; };
  defaults = builtins.mapAttrs (n: o: o.default or null) module.options.services.trove;
  config = { services.trove = defaults // builtins.fromJSON (builtins.readFile settingsFile); };
  c = module.config;
  nix = c.content.nix.settings;
in {
  enabled = c.condition;
  execStart = c.content.systemd.services.trove.serviceConfig.ExecStart;
  substituters = if nix.condition then nix.content.substituters else [ ];
  trustedKeys = if nix.condition then nix.content.trusted-public-keys else [ ];
  warnings = c.content.warnings;
}
`

type moduleResult struct {
	Enabled      bool     `json:"enabled"`
	ExecStart    string   `json:"execStart"`
	Substituters []string `json:"substituters"`
	TrustedKeys  []string `json:"trustedKeys"`
	Warnings     []string `json:"warnings"`
}

func evalModule(t *testing.T, settings map[string]any) moduleResult {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(settings)
	os.WriteFile(filepath.Join(dir, "settings.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "eval.nix"), []byte(stubEval), 0o644)
	out := nixtest.Run(t, "nix-instantiate", "--eval", "--strict", "--json",
		"--arg", "settingsFile", filepath.Join(dir, "settings.json"),
		"--arg", "moduleFile", moduleFile, filepath.Join(dir, "eval.nix"))
	var r moduleResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return r
}

// TestNixOSModuleRunsTheAgent evaluates the module and checks that the
// command line it gives systemd is one `trove agent` accepts, and that the
// cache becomes a substituter with its key.
func TestNixOSModuleRunsTheAgent(t *testing.T) {
	nixtest.Require(t)
	const pub = "laptop-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0="
	r := evalModule(t, map[string]any{
		"enable": true, "package": "/nix/store/00000000000000000000000000000000-trove",
		"peers":       []string{"/ip4/192.168.1.7/tcp/4807/p2p/12D3KooWAbc"},
		"mdns":        false,
		"cacheListen": "127.0.0.1:4808", "cacheKey": "laptop-1", "cachePublicKey": pub,
	})
	if !r.Enabled || !slices.Equal(r.Substituters, []string{"http://127.0.0.1:4808"}) || !slices.Equal(r.TrustedKeys, []string{pub}) || len(r.Warnings) != 0 {
		t.Fatalf("module config: %+v", r)
	}
	bin, rest, ok := strings.Cut(r.ExecStart, " ")
	if !ok || bin != "/nix/store/00000000000000000000000000000000-trove/bin/trove" {
		t.Fatalf("ExecStart %q", r.ExecStart)
	}
	args := shellWords(t, rest)
	a := newApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" })
	cmd, _, err := newRootCmd(a).Find(args)
	if err != nil || cmd.Name() != "agent" {
		t.Fatalf("ExecStart %q does not run trove agent: %v", r.ExecStart, err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("trove agent refuses the module's flags %q: %v", args, err)
	}
	f := cmd.Flags()
	for flag, want := range map[string]string{
		"home": "/var/lib/trove", "cache-listen": "127.0.0.1:4808", "cache-from-peers": "true",
		"cache-key": "laptop-1", "cache-timeout": "5s", "mdns": "false", "dht": "false", "serve": "trusted",
		"peer": "[/ip4/192.168.1.7/tcp/4807/p2p/12D3KooWAbc]",
	} {
		if got := f.Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}

	// Without the cache: no cache flags, no substituter.
	r = evalModule(t, map[string]any{"enable": true, "package": "/p"})
	if strings.Contains(r.ExecStart, "cache") || len(r.Substituters) != 0 || len(r.Warnings) != 0 {
		t.Fatalf("module without the cache: %+v", r)
	}
	// The cache without a key Nix trusts: a warning.
	r = evalModule(t, map[string]any{"enable": true, "package": "/p", "cacheListen": "127.0.0.1:4808"})
	if len(r.Warnings) != 1 || len(r.TrustedKeys) != 0 {
		t.Fatalf("module with the cache but no public key: %+v", r)
	}
}

// shellWords splits a line of single-quoted words, as the stub writes them.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	for _, w := range strings.Fields(s) {
		if len(w) < 2 || w[0] != '\'' || w[len(w)-1] != '\'' {
			t.Fatalf("word %q of %q is not single-quoted", w, s)
		}
		out = append(out, w[1:len(w)-1])
	}
	return out
}
