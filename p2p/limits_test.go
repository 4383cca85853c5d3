package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// bigIndexContent holds paths whose chunk indexes have n chunks each, so
// that info answers are as large as the caps allow without a real NAR of
// tens of GiB behind them.
type bigIndexContent struct{ n int }

func (c bigIndexContent) index(h nix.PathHash) chunk.Index {
	ix := make(chunk.Index, c.n)
	for i := range ix {
		copy(ix[i].ID[:], h[:])
		binary.BigEndian.PutUint64(ix[i].ID[24:], uint64(i))
		ix[i].Size = chunk.AvgSize
	}
	return ix
}

func (c bigIndexContent) PathInfo(h nix.PathHash) (*nix.PathInfo, error) {
	return &nix.PathInfo{Path: nix.Path{Hash: h, Name: "big"}, NarHash: nix.Hash{1}, NarSize: c.index(h).NarSize()}, nil
}

func (c bigIndexContent) ChunkIndexOf(h nix.PathHash) (chunk.Index, error) {
	return c.index(h), nil
}

func (bigIndexContent) ReadChunk(context.Context, chunk.ID, uint32) ([]byte, error) {
	return nil, nix.ErrNotValid
}

func (bigIndexContent) WriteNAR(context.Context, io.Writer, nix.Path, int64, int64) error {
	return nix.ErrNotValid
}

// TestInfoAnswersUpToTheCap: info answers as large as MaxInfoResponse
// allows get through the resource manager: one path whose chunk index is
// 40 MB (a NAR of about 70 GiB would have that), and a full batch of 64
// paths with 600 KB indexes each (1 GiB NARs), 38 MB in all.
func TestInfoAnswersUpToTheCap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks int
		paths  int
	}{
		{"one huge index", 1_150_000, 1},
		{"64 indexes of 1 GiB NARs", 1 << 14, MaxInfoHashes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, b := servingTo(ctx, t, bigIndexContent{tc.chunks})
			hs := make([]nix.PathHash, tc.paths)
			for i := range hs {
				hs[i][0], hs[i][1] = byte(i), 1
			}
			infos, err := b.Info(ctx, a.ID(), hs)
			if err != nil {
				t.Fatal(err)
			}
			for i, ri := range infos {
				if ri == nil || len(ri.Index) != tc.chunks {
					t.Fatalf("info %d missing or short", i)
				}
			}
		})
	}
}

// servingTo starts a node a serving content and a node b of its trust
// group connected to it.
func servingTo(ctx context.Context, t testing.TB, content Content) (a, b *Node) {
	t.Helper()
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	a = startNode(t, Config{Trust: ta, Content: content})
	b = startNode(t, Config{Trust: tb})
	pair(a, b, ta, tb)
	if err := b.Connect(ctx, a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func (c bigIndexContent) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	return infosOf(c.PathInfo, roots)
}

// wideClosure is a bigIndexContent whose every path has a closure of
// `paths` paths.
type wideClosure struct {
	bigIndexContent
	paths int
}

func (c wideClosure) Closure(...nix.Path) ([]*nix.PathInfo, error) {
	out := make([]*nix.PathInfo, c.paths)
	for i := range out {
		out[i], _ = c.PathInfo(nix.PathHash{byte(i), byte(i >> 8), 7})
	}
	return out, nil
}

// TestInfoClosureOfManyPaths: a closure of more paths than a decoder takes
// array elements comes back cut short (the rest is asked for with Info),
// not as an answer the client must reject as a protocol violation.
func TestInfoClosureOfManyPaths(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := servingTo(ctx, t, wideClosure{bigIndexContent{1}, MaxHaveHashes + 900})
	infos, err := b.InfoClosure(ctx, a.ID(), []nix.PathHash{{1, 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != MaxHaveHashes {
		t.Fatalf("%d infos, want the first %d", len(infos), MaxHaveHashes)
	}
}

// fixedManifests answers every manifest request with the same bytes.
type fixedManifests []byte

func (m fixedManifests) ManifestBytes(string, uint64) ([]byte, error) { return m, nil }

// TestManifestAnswersUpToTheCap: a manifest as large as MaxManifestBytes
// gets through the resource manager on both ends, also when several peers
// ask at once (libp2p's default per-peer protocol memory, 16 MiB, refused
// any manifest over 9.6 MiB).
func TestManifestAnswersUpToTheCap(t *testing.T) {
	b := randomBytes(MaxManifestBytes-64, 9)
	ta := NewTrustGroup(nil)
	a := startNode(t, Config{Trust: ta, Manifests: fixedManifests(b)})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 3)
	for range cap(errs) {
		tb := NewTrustGroup(nil)
		c := startNode(t, Config{Trust: tb})
		pair(a, c, ta, tb)
		if err := c.Connect(ctx, a.AddrInfo()); err != nil {
			t.Fatal(err)
		}
		go func() {
			got, err := c.Manifest(ctx, a.ID(), "big", 0)
			if err == nil && !bytes.Equal(got, b) {
				err = errors.New("the manifest differs")
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
