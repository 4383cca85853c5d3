package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/trove-p2p/trove"

// layerRules are the import directions DESIGN.md sets, as "pkg must not
// depend on these" (not) or "pkg may depend on no trove package but these"
// (only). They are checked against each package's transitive dependencies
// (`go list -deps`), so a forbidden import through a third package counts
// too. Test files are not product code and are not checked. A rule for a
// package that does not exist fails, since it would check nothing.
var layerRules = []struct {
	pkg string
	not []string
	// With onlyTrove set, only lists every trove package pkg may depend
	// on (none: a leaf).
	only      []string
	onlyTrove bool
	// noDB: pkg must not link the embedded store's database (Badger), so
	// that it works over any store behind its interfaces.
	noDB bool
	why  string
}{
	{pkg: "store", not: []string{"manifest", "p2p", "fetch", "profile", "agent", "nixcache", "bundle"},
		why: "the store knows nothing of peers, manifests or front ends"},
	{pkg: "manifest", not: []string{"store", "p2p", "fetch", "profile", "agent", "nixcache", "bundle"}, noDB: true,
		why: "manifests do not touch the network or a store"},
	{pkg: "p2p", not: []string{"store", "fetch", "profile", "agent", "nixcache", "bundle"}, noDB: true,
		why: "p2p speaks wire formats and decides nothing; it serves any store through its Content interface"},
	{pkg: "fetch", not: []string{"agent", "nixcache", "bundle"},
		why: "fetching is used by the agent, the cache wiring and the CLI, not the reverse"},
	{pkg: "profile", not: []string{"store", "p2p", "fetch", "agent", "nixcache", "bundle"}, noDB: true,
		why: "profiles, generations and activation touch no peer"},
	{pkg: "agent", not: []string{"localapi"},
		why: "the agent runs behaviour and serves the API it is handed; it never calls its clients"},
	{pkg: "localapi", not: []string{"bench", "testnet"},
		why: "the local API is product code: the CLI's and other programs' way in"},
	{pkg: "nixcache", not: []string{"store", "p2p", "fetch", "agent", "bundle"}, noDB: true,
		why: "the cache protocol knows nothing of peers: the agent hands it a Source"},
	{pkg: "bundle", not: []string{"store", "p2p", "fetch", "agent", "nixcache"}, noDB: true,
		why: "bundles know nothing of peers"},
	{pkg: "strictcbor", onlyTrove: true, noDB: true,
		why: "every decoder of outside bytes uses it, so it is a leaf"},
	{pkg: "nix", onlyTrove: true, only: []string{"strictcbor", "chunk"}, noDB: true,
		why: "the pure Nix formats need no database, network or policy"},
	{pkg: "group", not: []string{"store", "p2p", "fetch", "profile", "agent", "nixcache", "bundle", "manifest"}, noDB: true,
		why: "group membership is records and rules: p2p carries them, the agent applies them"},
	{pkg: "trust", not: []string{"store", "p2p", "fetch", "profile", "agent", "nixcache", "bundle"}, noDB: true,
		why: "trust is the one belief rule: it judges PathInfos, whatever brought them"},
	{pkg: "chunk", onlyTrove: true, noDB: true,
		why: "chunking and chunk IDs are a pure format"},
	{pkg: "nixdaemon", onlyTrove: true, only: []string{"nix", "strictcbor", "chunk"}, noDB: true,
		why: "the Nix daemon's protocol is a format and a connection: the store decides what to do with it"},
}

// testOnly are packages that only tests may import; frontEnds the packages
// that only cmd/trove (and each other, in this order) may import.
var (
	testOnly  = []string{"nixtest", "testnet/nettest"}
	frontEnds = map[string][]string{ // package: who may import it
		"bench":    {"cmd/trove"},
		"localapi": {"cmd/trove"},
		"testnet":  {"cmd/trove", "bench"},
	}
	// testingImporters are the packages outside trove allowed to bring
	// package testing into the binary. go-libp2p-kad-dht's dht_options.go
	// imports it for two unexported test options (v0.42.2); nothing of ours
	// may add another.
	testingImporters = []string{"github.com/libp2p/go-libp2p-kad-dht"}
)

type listedPkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
	Error      *struct{ Err string }
}

// goList runs `go list -deps -json` on patterns from the module's root and
// returns every package it lists, dependencies included, by import path.
func goList(t *testing.T, patterns ...string) map[string]*listedPkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	cmd := exec.Command("go", append([]string{"list", "-e", "-deps", "-json=ImportPath,Imports,Deps,Standard,Error"}, patterns...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", patterns, err, stderr.Bytes())
	}
	pkgs := map[string]*listedPkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list: %v", err)
		}
		if p.Error != nil && strings.HasPrefix(p.ImportPath, module) {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs[p.ImportPath] = &p
	}
	return pkgs
}

// within reports whether path is the trove package rel or one under it;
// with rel empty, whether it is any trove package.
func within(path, rel string) bool {
	full := module
	if rel != "" {
		full += "/" + rel
	}
	return path == full || strings.HasPrefix(path, full+"/")
}

// chain is the shortest import chain from one package to another, to show
// where a forbidden dependency comes in.
func chain(pkgs map[string]*listedPkg, from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for p := cur; p != ""; p = prev[p] {
				path = append(path, strings.TrimPrefix(p, module+"/"))
			}
			slices.Reverse(path)
			return strings.Join(path, " → ")
		}
		if p := pkgs[cur]; p != nil {
			for _, imp := range p.Imports {
				if _, seen := prev[imp]; !seen {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return from + " → … → " + to
}

// TestLayering checks the import directions of layerRules, that no
// product package depends on bench, testnet or test-only packages, and
// that only tests import the test-only ones.
func TestLayering(t *testing.T) {
	pkgs := goList(t, "./...")
	for _, must := range []string{"store", "p2p", "agent", "cmd/trove"} {
		if pkgs[module+"/"+must] == nil {
			t.Fatalf("go list found no package %s: the test is looking in the wrong place", must)
		}
	}
	for _, r := range layerRules {
		p := pkgs[module+"/"+r.pkg]
		if p == nil {
			t.Errorf("no package %s: its rule checks nothing (rename or drop the rule)", r.pkg)
			continue
		}
		for _, dep := range p.Deps {
			if r.noDB && strings.HasPrefix(dep, "github.com/dgraph-io/badger") {
				t.Errorf("%s links the database %s (%s): it must work over any store, through the interfaces it defines", r.pkg, dep, chain(pkgs, p.ImportPath, dep))
			}
			if !within(dep, "") {
				continue
			}
			rel := strings.TrimPrefix(dep, module+"/")
			bad := slices.ContainsFunc(r.not, func(n string) bool { return within(dep, n) })
			if r.onlyTrove && !slices.ContainsFunc(r.only, func(n string) bool { return within(dep, n) }) {
				bad = true
			}
			if bad {
				t.Errorf("%s depends on %s (%s): %s", r.pkg, rel, chain(pkgs, p.ImportPath, dep), r.why)
			}
		}
	}
	// Any dependency on these goes through a trove package that imports
	// one directly, so direct imports are checked: one error per culprit.
	for _, path := range slices.Sorted(maps.Keys(pkgs)) {
		p := pkgs[path]
		if !within(path, "") {
			continue
		}
		rel := strings.TrimPrefix(path, module+"/")
		for _, dep := range p.Imports {
			for _, tonly := range testOnly {
				if within(dep, tonly) && !within(path, tonly) {
					t.Errorf("%s depends on %s (%s), which only tests may import", rel, tonly, chain(pkgs, path, dep))
				}
			}
			for fe, allowed := range frontEnds {
				if within(dep, fe) && !within(path, fe) && !slices.Contains(allowed, rel) {
					t.Errorf("%s depends on %s (%s): only %s may, product code must not", rel, fe, chain(pkgs, path, dep), strings.Join(allowed, " and "))
				}
			}
		}
	}
}

// TestNoTestingInBinary checks that the trove binary does not link package
// testing through any trove package, nor a test-only helper.
func TestNoTestingInBinary(t *testing.T) {
	pkgs := goList(t, "./cmd/trove")
	for path, p := range pkgs {
		for _, tonly := range testOnly {
			if within(path, tonly) {
				t.Errorf("the binary links %s (%s), which only tests may import", tonly, chain(pkgs, module+"/cmd/trove", path))
			}
		}
		for _, imp := range p.Imports {
			if imp != "testing" && !strings.HasPrefix(imp, "testing/") {
				continue
			}
			switch {
			case within(path, ""):
				t.Errorf("the binary links package %s through %s (%s)", imp, path, chain(pkgs, module+"/cmd/trove", path))
			case !slices.ContainsFunc(testingImporters, func(m string) bool { return path == m || strings.HasPrefix(path, m+"/") }):
				t.Errorf("the binary links package %s through the dependency %s (%s); keep it out, or list it in testingImporters saying why",
					imp, path, chain(pkgs, module+"/cmd/trove", path))
			}
		}
	}
}
