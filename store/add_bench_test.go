package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// benchBytes is the size of benchmark trees: TROVE_BENCH_BYTES, default 256 MiB.
func benchBytes() int64 {
	if v, err := strconv.ParseInt(os.Getenv("TROVE_BENCH_BYTES"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 256 << 20
}

// benchTree builds (once per machine and size, under the temp dir) a tree
// shaped like a package closure: a few large files, many small ones, nested
// directories, symlinks, executables; contents are random so nothing
// compresses or dedups.
func benchTree(b testing.TB, size int64) string {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("trove-bench-tree-%d", size))
	done := dir + ".done"
	if _, err := os.Stat(done); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	r := rand.New(rand.NewPCG(uint64(size), 7))
	var written int64
	for i := 0; written < size; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("pkg%03d", i/50), "lib")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		n := int64(r.IntN(64 << 10)) // mostly small files
		if i%20 == 0 {
			n = int64(8<<20 + r.IntN(24<<20))
		}
		n = min(n, size-written)
		mode := os.FileMode(0o644)
		if i%7 == 0 {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), randomBytes(uint64(i), int(n)), mode); err != nil {
			b.Fatal(err)
		}
		if i%50 == 0 {
			os.Symlink("lib/f"+strconv.Itoa(i), filepath.Join(filepath.Dir(sub), "link"))
		}
		written += n
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkAdd compares `trove add` (Store.AddTree into a fresh store) with
// `nix-store --add` of the same tree, alternating the two in each iteration
// and flushing dirty pages before each, so neither pays for the other's
// writeback. It reports both wall times and their ratio (issue 2 targets
// trove/nix ≤ 1.0). Set TROVE_BENCH_BYTES=1073741824 for the 1 GiB figure.
func BenchmarkAdd(b *testing.B) {
	size := benchBytes()
	tree := benchTree(b, size)
	_, nixErr := exec.LookPath("nix-store")
	var troveTime, nixTime time.Duration
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		home, _ := os.MkdirTemp("", "trove-bench-home")
		s, err := Open(home, Options{})
		if err != nil {
			b.Fatal(err)
		}
		syscall.Sync()
		b.StartTimer()
		start := time.Now()
		if _, err := s.AddTree(context.Background(), tree, "tree"); err != nil {
			b.Fatal(err)
		}
		troveTime += time.Since(start)
		b.StopTimer()
		s.Close()
		nix.RemoveTree(home)
		if nixErr == nil {
			syscall.Sync()
			start := time.Now()
			out, err := exec.Command("nix-store", "--add", tree).CombinedOutput()
			if err != nil {
				b.Fatalf("nix-store --add: %v: %s", err, out)
			}
			nixTime += time.Since(start)
			p := strings.TrimSpace(string(out))
			if out, err := exec.Command("nix-store", "--delete", p).CombinedOutput(); err != nil {
				b.Fatalf("nix-store --delete: %v: %s", err, out)
			}
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(troveTime.Seconds()/n, "trove-s/op")
	if nixErr != nil {
		b.Log("nix-store baseline skipped: nix not installed")
		return
	}
	b.ReportMetric(nixTime.Seconds()/n, "nix-s/op")
	b.ReportMetric(troveTime.Seconds()/nixTime.Seconds(), "trove/nix")
}
