package main

import (
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
)

// FuzzArguments feeds arbitrary command-line arguments to the parsers of
// STOREPATH, NAME[@N], peer addresses and keys: each must return a value
// or an error, never panic, and accepted values must round-trip.
func FuzzArguments(f *testing.F) {
	for _, s := range []string{
		"/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt",
		"i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt",
		"/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt/bin/sh",
		"laptop", "laptop@3", "laptop@0", "a/b@1",
		"/ip4/127.0.0.1/tcp/4807/p2p/12D3KooWGRUVh7dPpXwHmXhHJtJZmPoFgLDbfRPD2Jn9nQoMnKDS",
		"/ip4/1.2.3.4/tcp/1", "laptop-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0=", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := nix.ParsePathLoose(nix.DefaultStoreDir, s); err == nil {
			if q, err := nix.ParseBase(p.String()); err != nil || q != p {
				t.Fatalf("store path %q does not round-trip: %v", s, err)
			}
		}
		if name, gen, err := manifest.ParseRef(s); err == nil {
			if manifest.CheckName(name) != nil || (strings.Contains(s, "@") && gen == 0) {
				t.Fatalf("ParseRef(%q) accepted %q@%d", s, name, gen)
			}
		}
		if ais, err := agent.ParsePeerAddrs([]string{s}); err == nil && (len(ais) != 1 || ais[0].ID == "") {
			t.Fatalf("ParsePeerAddrs(%q) = %v", s, ais)
		}
		if k, err := manifest.ParsePublicKey(s); err == nil {
			if back, err := manifest.ParsePublicKey(k.String()); err != nil || back.String() != k.String() {
				t.Fatalf("key %q does not round-trip", s)
			}
		}
	})
}
