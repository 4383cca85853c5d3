package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/trove-p2p/trove/store"
)

// blastProto is a test-only protocol: the client sends a uvarint N, the
// server writes N bytes. It is the baseline the chunks protocol is
// measured against: the same hosts, transport and muxer, no store, no
// framing, no hashing.
const blastProto protocol.ID = "/trove-test/blast/1.0.0"

func serveBlast(st network.Stream) {
	defer st.Close()
	n, err := binary.ReadUvarint(bufio.NewReader(st))
	if err != nil {
		st.Reset()
		return
	}
	buf := randomBytes(256<<10, 7)
	for n > 0 {
		m := min(n, uint64(len(buf)))
		if _, err := st.Write(buf[:m]); err != nil {
			st.Reset()
			return
		}
		n -= m
	}
}

func blast(ctx context.Context, n *Node, srv *Node, size int64, buf []byte) error {
	st, err := n.Host().NewStream(ctx, srv.ID(), blastProto)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Write(binary.AppendUvarint(nil, uint64(size))); err != nil {
		return err
	}
	st.CloseWrite()
	got, err := io.CopyBuffer(io.Discard, st, buf)
	if err != nil {
		return err
	}
	if got != size {
		return fmt.Errorf("blast: %d of %d bytes", got, size)
	}
	return nil
}

// BenchmarkChunksThroughput fetches every chunk of a 256 MiB NAR over the
// chunks protocol (window 16) between two nodes on loopback, over TCP and
// over QUIC. The baseline, "stream", copies as many bytes over a plain
// libp2p stream between the same two hosts. "chunks" also runs the
// baseline between its own iterations (timer stopped) and reports
// chunks/stream, the ratio of the two throughputs in the same run.
//
//	go test -run='^$' -bench=ChunksThroughput -benchtime=4x ./p2p/
func BenchmarkChunksThroughput(b *testing.B) {
	const size = 256 << 20
	// The baseline protocol gets the chunks protocol's resource limits.
	saved := protocolLimits
	b.Cleanup(func() { protocolLimits = saved })
	protocolLimits = slices.Clone(saved)
	for _, l := range saved {
		if l.proto == ProtoChunks {
			l.proto = blastProto
			protocolLimits = append(protocolLimits, l)
		}
	}

	s, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	pi := addTree(b, s, map[string][]byte{"data": randomBytes(size, 9)})
	ix, err := s.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		b.Fatal(err)
	}
	wants := make([]ChunkWant, len(ix))
	for i, c := range ix {
		wants[i] = ChunkWant{Chunk: c.ID, Size: c.Size}
	}
	narSize := int64(pi.NarSize)

	for _, tr := range []struct{ name, listen string }{
		{"tcp", "/ip4/127.0.0.1/tcp/0"},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1"},
	} {
		b.Run(tr.name, func(b *testing.B) {
			ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
			srv := startNode(b, Config{Listen: []string{tr.listen}, Trust: ta, Content: StoreContent{Store: s}})
			cli := startNode(b, Config{Listen: []string{tr.listen}, Trust: tb})
			pair(srv, cli, ta, tb)
			srv.Host().SetStreamHandler(blastProto, serveBlast)
			ctx := context.Background()
			if err := cli.Connect(ctx, srv.AddrInfo()); err != nil {
				b.Fatal(err)
			}
			fetch := func() error {
				var got int64
				err := cli.Fetch(ctx, srv.ID(), wants, 16, func(_ int, data []byte, err error) error {
					got += int64(len(data))
					return err
				})
				if err == nil && got != narSize {
					err = fmt.Errorf("fetched %d of %d bytes", got, narSize)
				}
				return err
			}
			buf := make([]byte, 256<<10)
			b.Run("chunks", func(b *testing.B) {
				b.SetBytes(narSize)
				var chunksTime, streamTime time.Duration
				for b.Loop() {
					t0 := time.Now()
					if err := fetch(); err != nil {
						b.Fatal(err)
					}
					chunksTime += time.Since(t0)
					b.StopTimer()
					t0 = time.Now()
					if err := blast(ctx, cli, srv, narSize, buf); err != nil {
						b.Fatal(err)
					}
					streamTime += time.Since(t0)
					b.StartTimer()
				}
				mbs := func(d time.Duration) float64 { return float64(narSize) * float64(b.N) / d.Seconds() / 1e6 }
				b.ReportMetric(mbs(streamTime), "stream-MB/s")
				b.ReportMetric(streamTime.Seconds()/chunksTime.Seconds(), "chunks/stream")
			})
			b.Run("stream", func(b *testing.B) {
				b.SetBytes(narSize)
				for b.Loop() {
					if err := blast(ctx, cli, srv, narSize, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
