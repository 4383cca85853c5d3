package bundle

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// discardNAR checks a NAR's structure and drops its contents.
type discardNAR struct{}

func (discardNAR) Directory(string) error       { return nil }
func (discardNAR) Symlink(string, string) error { return nil }
func (discardNAR) Regular(_ string, _ bool, size int64, r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err == nil && n != size {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	return err
}

// FuzzReader feeds arbitrary bytes to the bundle reader as Import reads a
// bundle: the head, each NAR frame (parsed as a NAR), the trailer. It must
// never panic or allocate beyond the input, and what it accepts must
// survive a round trip through the writer. The seed corpus (valid bundles
// and a nix-export) is in testdata/fuzz/FuzzReader; TestFuzzSeeds -update
// remakes it.
func FuzzReader(f *testing.F) {
	f.Add([]byte(magic)) // the rest of the corpus is in testdata/fuzz/FuzzReader
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := newReader(bytes.NewReader(data))
		hd, err := rd.readHead()
		if err != nil {
			return
		}
		again, err := encodeHead(hd.storeDir, hd.manifests, hd.infos)
		if err != nil {
			t.Fatalf("a head that parsed does not encode: %v", err)
		}
		hd2, err := newReader(bytes.NewReader(again)).readHead()
		if err != nil {
			t.Fatalf("a re-encoded head does not parse: %v", err)
		}
		if again2, _ := encodeHead(hd2.storeDir, hd2.manifests, hd2.infos); !bytes.Equal(again, again2) {
			t.Fatal("the head changed in a round trip")
		}
		for _, pi := range hd.infos {
			lr, err := rd.narFrame(pi)
			if err != nil {
				return
			}
			if _, err := nix.ReadNAR(lr, discardNAR{}); err != nil {
				if err := rd.skip(lr); err != nil {
					return
				}
			}
		}
		_ = rd.end()
	})
}

// seedBundles are small valid bundles and a nix-export, made afresh.
func seedBundles(t testing.TB) [][]byte {
	a := newMachine(t)
	key := newKey(t, "seed-1")
	leaf := addTree(t, a.store, "leaf", map[string]string{"a": "x:#!/bin/sh\n", "l": "->a"}, nil, key)
	top := addTree(t, a.store, "top", map[string]string{"ref": leaf.Path.Abs(a.store.StoreDir())}, []nix.Path{leaf.Path}, key)
	publish(t, a, key, "seed", top.Path, "")
	var seeds [][]byte
	for _, refs := range [][]string{{leaf.Path.String()}, {"seed"}} {
		seeds = append(seeds, createBundle(t, a, refs...))
	}
	var nixExport bytes.Buffer
	if _, err := CreateNixExport(t.Context(), &nixExport, a.store, a.hist, []string{"seed"}); err != nil {
		t.Fatal(err)
	}
	return append(seeds, nixExport.Bytes(), []byte(magic))
}

// TestFuzzSeeds keeps the checked-in corpus parseable; -update rewrites it.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, seed := range seedBundles(t) {
			file := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			if err := os.WriteFile(file, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", seed), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	if len(files) < 2 {
		t.Fatalf("the seed corpus in %s is missing; run go test -run TestFuzzSeeds -update", dir)
	}
}
