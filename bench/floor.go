package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/zeebo/blake3"
)

// floorProto is the bench's own protocol: the client sends a uvarint N,
// the server writes N bytes.
const floorProto protocol.ID = "/trove-bench/floor/1.0.0"

// secureFloor is the least a sync of size bytes can cost on this machine
// under trove's rules, measured: the bytes cross one libp2p stream (TCP
// on loopback, TLS, yamux: what trove's peers speak) and the receiver
// hashes them with SHA-256 (the narHash) and BLAKE3 (the chunk IDs), each
// on its own goroutine. No store, no disk, no framing, no scheduling: a
// sync does all this and more, on the same cores. Nix's copy from a
// binary cache has no encryption and no second hash to pay.
func secureFloor(ctx context.Context, size int64) (time.Duration, error) {
	opts := floorHost("/ip4/127.0.0.1/tcp/0")
	srv, err := libp2p.New(opts...)
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	cli, err := libp2p.New(opts...)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	block := make([]byte, 256<<10)
	for i := range block {
		block[i] = byte(i * 131)
	}
	srv.SetStreamHandler(floorProto, serveBytes(block))
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		return 0, err
	}
	start := time.Now()
	st, err := cli.NewStream(ctx, srv.ID(), floorProto)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if _, err := st.Write(binary.AppendUvarint(nil, uint64(size))); err != nil {
		return 0, err
	}
	// Each hash on its own goroutine, fed by reference: the cheapest way
	// to have both, as a sync must.
	sha, b3 := make(chan []byte, 8), make(chan []byte, 8)
	done := make(chan struct{}, 2)
	go func() {
		h := sha256.New()
		for b := range sha {
			h.Write(b)
		}
		done <- struct{}{}
	}()
	go func() {
		h := blake3.New()
		for b := range b3 {
			h.Write(b)
		}
		done <- struct{}{}
	}()
	var got int64
	var rerr error
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
	}
	// Buffers go round a ring larger than both channels, so none is reused
	// while a hash still reads it.
	for i := 0; got < size; i++ {
		b := bufs[i%len(bufs)]
		n, err := io.ReadFull(st, b)
		if n > 0 {
			sha <- b[:n]
			b3 <- b[:n]
			got += int64(n)
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(sha)
	close(b3)
	<-done
	<-done
	d := time.Since(start)
	if got != size {
		return 0, fmt.Errorf("secure floor: %d of %d bytes: %v", got, size, rerr)
	}
	return d, nil
}

// floorHost is a floor's libp2p host listening on listen: TCP, TLS and
// yamux only, the cheapest secure transport trove's peers speak.
func floorHost(listen string, more ...libp2p.Option) []libp2p.Option {
	return append([]libp2p.Option{
		libp2p.ListenAddrStrings(listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	}, more...)
}

// serveBytes answers a stream whose request is a uvarint N with N bytes,
// block after block.
func serveBytes(block []byte) network.StreamHandler {
	return func(st network.Stream) {
		defer st.Close()
		var b [binary.MaxVarintLen64]byte
		k, err := io.ReadAtLeast(st, b[:], 1)
		n, m := binary.Uvarint(b[:k])
		if err != nil || m <= 0 {
			st.Reset()
			return
		}
		for n > 0 {
			w := min(n, uint64(len(block)))
			if _, err := st.Write(block[:w]); err != nil {
				st.Reset()
				return
			}
			n -= w
		}
	}
}
