package p2p

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/store"
)

// The embedded store is what agents serve.
var _ Store = (*store.Store)(nil)

// testNode starts a node on loopback TCP with a fresh store.
func testNode(t testing.TB, trust *TrustGroup, listen ...string) (*Node, *store.Store) {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(listen) == 0 {
		listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	n, err := New(context.Background(), Config{Key: key, Listen: listen, Trust: trust, Content: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, s
}

func pair(a, b *Node, ta, tb *TrustGroup) {
	ta.Allow(b.ID(), "b")
	tb.Allow(a.ID(), "a")
}

func addTree(t testing.TB, s *store.Store, files map[string][]byte) *nix.PathInfo {
	t.Helper()
	dir := t.TempDir()
	for rel, data := range files {
		p := filepath.Join(dir, "t", rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pi, err := s.AddTree(context.Background(), filepath.Join(dir, "t"), "t")
	if err != nil {
		t.Fatal(err)
	}
	return pi
}

func TestHaveInfoFetch(t *testing.T) {
	for _, transport := range []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"} {
		t.Run(transport, func(t *testing.T) {
			ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
			a, sa := testNode(t, ta, transport)
			b, _ := testNode(t, tb, transport)
			pair(a, b, ta, tb)
			big := bytes.Repeat([]byte("0123456789abcdef"), 200_000)
			for i := range big {
				big[i] ^= byte(i * 7 >> 3)
			}
			pi := addTree(t, sa, map[string][]byte{"big": big, "small": []byte("s")})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := b.Connect(ctx, a.AddrInfo()); err != nil {
				t.Fatal(err)
			}
			absent := nix.PathHash{1}
			have, err := b.Have(ctx, a.ID(), []nix.PathHash{pi.Path.Hash, absent})
			if err != nil || !have[0] || have[1] {
				t.Fatalf("have = %v, %v", have, err)
			}
			infos, err := b.Info(ctx, a.ID(), []nix.PathHash{absent, pi.Path.Hash})
			if err != nil || infos[0] != nil || infos[1] == nil {
				t.Fatalf("info = %v, %v", infos, err)
			}
			ri := infos[1]
			if ri.Info.NarHash != pi.NarHash || ri.Info.ChunkIndex != pi.ChunkIndex || ri.Info.Path != pi.Path {
				t.Fatalf("info mismatch: %+v vs %+v", ri.Info, pi)
			}
			var nar bytes.Buffer
			if err := sa.WriteNAR(ctx, &nar, pi.Path, 0, -1); err != nil {
				t.Fatal(err)
			}
			var wants []ChunkWant
			for _, c := range ri.Index {
				wants = append(wants, ChunkWant{Chunk: c.ID, Size: c.Size})
			}
			wants = append(wants, ChunkWant{Range: true, Path: pi.Path.Hash, Offset: 100, Length: 70000})
			var got bytes.Buffer
			var rng []byte
			err = b.Fetch(ctx, a.ID(), wants, 8, func(i int, data []byte, err error) error {
				if err != nil {
					return err
				}
				if wants[i].Range {
					rng = append([]byte(nil), data...)
				} else {
					got.Write(data)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), nar.Bytes()) {
				t.Fatal("chunks do not concatenate to the NAR")
			}
			if !bytes.Equal(rng, nar.Bytes()[100:70100]) {
				t.Fatal("range differs from the NAR")
			}
		})
	}
}

func TestUntrustedPeerIsRefused(t *testing.T) {
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	a, sa := testNode(t, ta)
	b, _ := testNode(t, tb)
	tb.Allow(a.ID(), "a") // b trusts a, a does not trust b
	pi := addTree(t, sa, map[string][]byte{"f": []byte("secret")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.Connect(ctx, a.AddrInfo())
	if err == nil {
		// The outbound side may see the handshake finish before a's gater
		// closes it; no stream may succeed either way.
		if _, err := b.Have(ctx, a.ID(), []nix.PathHash{pi.Path.Hash}); err == nil {
			t.Fatal("an untrusted peer got a have answer")
		}
	}
	if bw := a.bw.GetBandwidthForPeer(b.ID()); bw.TotalOut != 0 {
		t.Fatalf("a sent %d bytes of protocol data to an untrusted peer", bw.TotalOut)
	}
	_ = peer.ID("")
}

// TestFetchMore: what more adds is asked on the same stream once the
// last chunk asked so far is half in (before got sees it), answered in
// order and numbered on; nothing ends the stream. Plain and compressed.
func TestFetchMore(t *testing.T) {
	for _, zstd := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "zstd"}[zstd], func(t *testing.T) {
			a, b, sa := connectedPair(t)
			data := make([]byte, 1<<20)
			for i := range data {
				data[i] = byte(i*7>>3) ^ byte(i>>11)
			}
			pi := addTree(t, sa, map[string][]byte{"big": data})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			infos, err := b.Info(ctx, a.ID(), []nix.PathHash{pi.Path.Hash})
			if err != nil || infos[0] == nil {
				t.Fatalf("info: %v", err)
			}
			var all []ChunkWant
			for _, c := range infos[0].Index {
				all = append(all, ChunkWant{Chunk: c.ID, Size: c.Size, Zstd: zstd, Defer: true}) // Defer: a slot is taken
			}
			if len(all) < 4 {
				t.Fatalf("%d chunks: too few to test", len(all))
			}
			asked := 1 // all[:asked] have been asked
			var events []string
			more := func() []ChunkWant {
				events = append(events, fmt.Sprintf("more at %d", asked-1))
				n := min(asked, len(all)-asked) // 1, 2, 4, ...: several at once too
				asked += n
				return all[asked-n : asked]
			}
			var got bytes.Buffer
			err = b.FetchMore(ctx, a.ID(), all[:1], 1, more, func(i int, data []byte, err error) error {
				if err != nil {
					return err
				}
				events = append(events, fmt.Sprintf("got %d", i))
				if i >= len(all) || chunk.Sum(data) != all[i].Chunk {
					t.Errorf("answer %d is not chunk %d", i, i)
				}
				// The last answer is the exception: with nothing more to
				// ask, the stream's write side closed when it was half in,
				// and a may have ended the stream, its slot with it, before
				// got sees it (seen under -race).
				a.slots.mu.Lock()
				h := a.slots.serving[b.ID()]
				a.slots.mu.Unlock()
				if h.streams != 1 && i < len(all)-1 {
					t.Errorf("answer %d: b holds %d streams at a, want 1", i, h.streams)
				}
				got.Write(data)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var nar bytes.Buffer
			if err := sa.WriteNAR(ctx, &nar, pi.Path, 0, -1); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), nar.Bytes()) {
				t.Fatalf("%d bytes in, not the NAR's %d", got.Len(), nar.Len())
			}
			// more is asked while the last chunk asked is arriving: before
			// got sees it, and after got saw the one before.
			var want []string
			for last, i := 0, 0; i < len(all); i++ {
				if i == last {
					want = append(want, fmt.Sprintf("more at %d", i))
					last = min(len(all)-1, 2*i+1)
					if i == len(all)-1 {
						last = -1
					}
				}
				want = append(want, fmt.Sprintf("got %d", i))
			}
			if strings.Join(events, ", ") != strings.Join(want, ", ") {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, ", "), strings.Join(want, ", "))
			}
		})
	}
}

// TestFetchMoreAtHalf: the next request reaches the peer while the last
// chunk asked is only half sent (a peer here that sends the second half
// only once it holds request 1), not after the chunk is in.
func TestFetchMoreAtHalf(t *testing.T) {
	b, _ := testNode(t, NewTrustGroup(nil))
	m := rawHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Connect(ctx, peer.AddrInfo{ID: m.ID(), Addrs: m.Addrs()}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(200_000, 5)
	w := ChunkWant{Chunk: chunk.Sum(data), Size: uint32(len(data))}
	heard := make(chan error, 1)
	m.SetStreamHandler(ProtoChunks, func(st network.Stream) {
		defer st.Close()
		r := bufio.NewReader(st)
		var req ChunkRequest
		if err := readMsg(r, maxChunkHeader, &req); err != nil {
			heard <- err
			return
		}
		writeMsg(st, &ChunkHeader{Seq: 0, Length: uint32(len(data))})
		st.Write(data[:len(data)/2])
		st.SetReadDeadline(time.Now().Add(2 * time.Second))
		err := readMsg(r, maxChunkHeader, &req)
		if err == nil && req.Seq != 1 {
			err = fmt.Errorf("request %d, want 1", req.Seq)
		}
		heard <- err
		if err != nil {
			st.Reset()
			return
		}
		st.Write(data[len(data)/2:])
		writeMsg(st, &ChunkHeader{Seq: 1, Length: uint32(len(data))})
		st.Write(data)
	})
	asked := 1
	err := b.FetchMore(ctx, m.ID(), []ChunkWant{w}, 1, func() []ChunkWant {
		if asked == 2 {
			return nil
		}
		asked++
		return []ChunkWant{w}
	}, func(i int, _ []byte, err error) error { return err })
	if herr := <-heard; herr != nil {
		t.Fatalf("while chunk 0 was half sent, the peer heard no next request: %v", herr)
	}
	if err != nil {
		t.Fatal(err)
	}
}
