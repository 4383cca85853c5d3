package nixdaemon

import (
	"context"
	"io"
	"os"
	"testing"
)

// benchSize is the size of the random file the benchmarks move through a
// `nix-daemon --stdio` on a chroot store.
const benchSize = 256 << 20

// BenchmarkAddToStoreNar adds a 256 MiB path to a fresh store each time:
// framing, the pipe, and the daemon restoring and hashing it.
func BenchmarkAddToStoreNar(b *testing.B) {
	dir := b.TempDir()
	randomFile(b, dir, benchSize)
	info, nar := sourceInfo(b, dir, "random", nil)
	ctx := context.Background()
	b.SetBytes(int64(info.NarSize))
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c := newTestStore(b).client(b, Options{})
		f, err := os.Open(nar)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.AddToStoreNar(ctx, info, f, true); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		f.Close()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkNarFromPath reads that path's NAR back to io.Discard.
func BenchmarkNarFromPath(b *testing.B) {
	dir := b.TempDir()
	randomFile(b, dir, benchSize)
	info, nar := sourceInfo(b, dir, "random", nil)
	ctx := context.Background()
	c := newTestStore(b).client(b, Options{})
	if err := add(ctx, c, info, nar, true); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(info.NarSize))
	b.ResetTimer()
	for range b.N {
		if err := c.NarFromPath(ctx, info.Path, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
