package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDiskUse: diskUse counts allocated blocks, so a sparse file costs
// (almost) nothing and a written one its size.
func TestDiskUse(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "full"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n, err := diskUse(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 || n > 2<<20 {
		t.Errorf("diskUse = %d, want about 1 MiB", n)
	}
}
