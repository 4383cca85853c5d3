package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/strictcbor"
)

// The tests in this file play a misbehaving peer against a serving node
// with raw streams, and check after each attack that the attacker was cut
// off and that an honest peer is still served correctly.

// rawHost starts a bare libp2p host on loopback TCP with no resource
// manager of its own: an attacker does not run trove's limits, so whatever
// refuses it must be the serving node.
func rawHost(t testing.TB) host.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// randomBytes returns n bytes of deterministic noise (no dedup, no
// compression).
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// abuseNet is a serving node a holding one path, an honest peer b paired
// with it, and a helper to add attackers to a's trust group.
type abuseNet struct {
	a, b   *Node
	ta     *TrustGroup
	sa     *store.Store
	pi     *nix.PathInfo
	ix     chunk.Index
	nar    []byte
	ctx    context.Context
	cancel context.CancelFunc
}

func newAbuseNet(t *testing.T, size int, listen ...string) *abuseNet {
	t.Helper()
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	a, sa := testNode(t, ta, listen...)
	b, _ := testNode(t, tb, listen...)
	pair(a, b, ta, tb)
	pi := addTree(t, sa, map[string][]byte{"data": randomBytes(size, 1)})
	ix, err := sa.ChunkIndexOf(pi.Path.Hash)
	if err != nil {
		t.Fatal(err)
	}
	var nar bytes.Buffer
	if err := sa.WriteNAR(context.Background(), &nar, pi.Path, 0, -1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if err := b.Connect(ctx, a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	return &abuseNet{a: a, b: b, ta: ta, sa: sa, pi: pi, ix: ix, nar: nar.Bytes(), ctx: ctx, cancel: cancel}
}

// attacker returns a raw host that a trusts (a greedy or buggy member of
// the trust group), connected to a.
func (an *abuseNet) attacker(t *testing.T) host.Host {
	t.Helper()
	h := rawHost(t)
	an.ta.Allow(h.ID(), "attacker")
	an.reconnect(t, h)
	return h
}

func (an *abuseNet) reconnect(t *testing.T, h host.Host) {
	t.Helper()
	if err := h.Connect(an.ctx, an.a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

// checkHonest has b use all three protocols against a and compares every
// answer with the store.
func (an *abuseNet) checkHonest(t testing.TB) {
	t.Helper()
	if err := an.honest(); err != nil {
		t.Fatalf("the honest peer is not served: %v", err)
	}
}

func (an *abuseNet) honest() error {
	ctx, cancel := context.WithTimeout(an.ctx, 15*time.Second)
	defer cancel()
	h := an.pi.Path.Hash
	have, err := an.b.Have(ctx, an.a.ID(), []nix.PathHash{h, {7}})
	if err != nil {
		return fmt.Errorf("have: %w", err)
	}
	if !have[0] || have[1] {
		return fmt.Errorf("have = %v", have)
	}
	infos, err := an.b.Info(ctx, an.a.ID(), []nix.PathHash{h})
	if err != nil {
		return fmt.Errorf("info: %w", err)
	}
	if infos[0] == nil || infos[0].Info.NarHash != an.pi.NarHash || len(infos[0].Index) != len(an.ix) {
		return fmt.Errorf("info = %+v", infos[0])
	}
	wants := make([]ChunkWant, 0, len(an.ix)+1)
	for _, c := range an.ix {
		wants = append(wants, ChunkWant{Chunk: c.ID, Size: c.Size})
	}
	wants = append(wants, ChunkWant{Range: true, Path: h, Offset: 3, Length: 1000})
	var got bytes.Buffer
	err = an.b.Fetch(ctx, an.a.ID(), wants, 8, func(i int, data []byte, err error) error {
		if err != nil {
			return err
		}
		if wants[i].Range {
			if !bytes.Equal(data, an.nar[3:1003]) {
				return errors.New("range differs from the NAR")
			}
			return nil
		}
		got.Write(data)
		return nil
	})
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if !bytes.Equal(got.Bytes(), an.nar) {
		return errors.New("fetched chunks differ from the NAR")
	}
	return nil
}

// connected reports whether a has a live connection to p.
func (an *abuseNet) connected(p peer.ID) bool {
	return an.a.Host().Network().Connectedness(p) == network.Connected
}

// setForTest sets a tunable to v until the test and its cleanups (the
// nodes it started) are done.
func setForTest[T any](t testing.TB, p *T, v T) {
	old := *p
	t.Cleanup(func() { *p = old })
	*p = v
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdsFor checks cond every 10 ms for d and fails the test the first
// time it is false. It is for what must not happen (a disconnection the
// server might make a moment after the request that provokes it): there
// is no event to wait for, so a window is the specification, and the test
// fails as soon as it is broken instead of sleeping through it.
func holdsFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatal(what)
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

// settled polls f every 10 ms until it returns the same value for 100 ms
// (or 10 s pass) and returns that value.
func settled(f func() int) int {
	last, same := f(), 0
	for deadline := time.Now().Add(10 * time.Second); same < 10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if v := f(); v == last {
			same++
		} else {
			last, same = v, 0
		}
	}
	return last
}

// serverStreams counts the streams of proto that a has open with p.
func serverStreams(n *Node, p peer.ID, proto protocol.ID) int {
	k := 0
	for _, c := range n.Host().Network().ConnsToPeer(p) {
		for _, st := range c.GetStreams() {
			if st.Protocol() == proto {
				k++
			}
		}
	}
	return k
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// frame prefixes b with its uvarint length, as writeMsg does.
func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// msg is v encoded and framed.
func msg(v any) []byte {
	b, err := strictcbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return frame(b)
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// hashes returns n distinct well-formed path hashes.
func hashes(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		h := make([]byte, nix.HashLen)
		binary.BigEndian.PutUint32(h, uint32(i))
		out[i] = h
	}
	return out
}

// haveArrayHeader is the start of a HaveRequest CBOR map whose hash array
// claims n elements.
func haveArrayHeader(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0xa1, 0x01, 0x9a}, n)
}

// readAll reads st until it ends or d passes and returns the byte count
// and the error that ended it (nil for a clean end).
func readAll(st network.Stream, d time.Duration) (int64, error) {
	st.SetReadDeadline(time.Now().Add(d))
	return io.Copy(io.Discard, st)
}

// TestProtocolViolationDisconnects sends one malformed or oversized message
// per case on a raw stream. The serving node must answer nothing, reset
// the stream and close the connection, and keep serving an honest peer.
func TestProtocolViolationDisconnects(t *testing.T) {
	an := newAbuseNet(t, 1<<20)
	att := an.attacker(t)
	c0 := an.ix[0]
	good := msg(&ChunkRequest{Seq: 0, Chunk: c0.ID[:], Size: c0.Size})
	h := an.pi.Path.Hash[:]
	cases := []struct {
		name  string
		proto protocol.ID
		// first, if set, is a valid chunks request answered before bad.
		first []byte
		bad   []byte
		// closeWrite ends the attacker's side after bad; otherwise it waits.
		closeWrite bool
	}{
		{"have/length above the cap", ProtoHave, nil, binary.AppendUvarint(nil, maxRequest+1), false},
		{"have/length of 2^62", ProtoHave, nil, binary.AppendUvarint(nil, 1<<62), false},
		{"have/length varint overflows", ProtoHave, nil, bytes.Repeat([]byte{0xff}, 11), false},
		{"have/length varint truncated", ProtoHave, nil, []byte{0x80}, true},
		{"have/body truncated", ProtoHave, nil, cat(binary.AppendUvarint(nil, 100), make([]byte, 10)), true},
		{"have/zero-length message", ProtoHave, nil, frame(nil), true},
		{"have/not CBOR", ProtoHave, nil, frame([]byte{0xff, 0xfe, 0xfd}), true},
		{"have/unknown field", ProtoHave, nil, msg(map[int]any{1: [][]byte{}, 9: 1}), true},
		{"have/wrong type", ProtoHave, nil, msg(map[int]any{1: "hashes"}), true},
		{"have/duplicate key", ProtoHave, nil, frame([]byte{0xa2, 0x01, 0x80, 0x01, 0x80}), true},
		{"have/indefinite length", ProtoHave, nil, frame([]byte{0xa1, 0x01, 0x9f, 0xff}), true},
		{"have/tag", ProtoHave, nil, frame([]byte{0xa1, 0x01, 0xd8, 0x2a, 0x80}), true},
		{"have/nested too deep", ProtoHave, nil, frame([]byte{0xa1, 0x01, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x80}), true},
		{"have/trailing bytes in the frame", ProtoHave, nil, frame(cat(msg(&HaveRequest{Hashes: hashes(1)})[1:], []byte{0})), true},
		{"have/a 19-byte hash", ProtoHave, nil, msg(&HaveRequest{Hashes: [][]byte{make([]byte, 19)}}), true},
		{"have/4097 hashes", ProtoHave, nil, msg(&HaveRequest{Hashes: hashes(MaxHaveHashes + 1)}), true},
		{"have/array claims 10^6 hashes", ProtoHave, nil, frame(cat(haveArrayHeader(1e6), bytes.Repeat(cat([]byte{0x54}, make([]byte, 20)), 100))), true},
		{"info/65 hashes", ProtoInfo, nil, msg(&InfoRequest{Hashes: hashes(MaxInfoHashes + 1)}), true},
		{"info/length above the cap", ProtoInfo, nil, binary.AppendUvarint(nil, maxRequest+1), false},
		{"info/not CBOR", ProtoInfo, nil, frame([]byte{0x1c}), true},
		{"chunks/header above the cap", ProtoChunks, nil, binary.AppendUvarint(nil, maxChunkHeader+1), false},
		{"chunks/both chunk and range", ProtoChunks, nil, msg(&ChunkRequest{Chunk: c0.ID[:], Size: c0.Size, Path: h, Length: 1}), true},
		{"chunks/neither chunk nor range", ProtoChunks, nil, msg(&ChunkRequest{Seq: 1}), true},
		{"chunks/chunk size 0", ProtoChunks, nil, msg(&ChunkRequest{Chunk: c0.ID[:]}), true},
		{"chunks/chunk size above ChunkMax", ProtoChunks, nil, msg(&ChunkRequest{Chunk: c0.ID[:], Size: chunk.MaxSize + 1}), true},
		{"chunks/31-byte chunk ID", ProtoChunks, nil, msg(&ChunkRequest{Chunk: c0.ID[:31], Size: c0.Size}), true},
		{"chunks/range of 0 bytes", ProtoChunks, nil, msg(&ChunkRequest{Path: h}), true},
		{"chunks/range above MaxRangeLen", ProtoChunks, nil, msg(&ChunkRequest{Path: h, Length: MaxRangeLen + 1}), true},
		{"chunks/19-byte path hash", ProtoChunks, nil, msg(&ChunkRequest{Path: h[:19], Length: 1}), true},
		{"chunks/garbage after a good request", ProtoChunks, good, frame([]byte{0xa1, 0x01}), false},
		{"chunks/truncated after a good request", ProtoChunks, good, cat(binary.AppendUvarint(nil, 40), []byte{0xa1}), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !an.connected(att.ID()) {
				an.reconnect(t, att)
			}
			st, err := att.NewStream(an.ctx, an.a.ID(), tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Reset()
			r := bufio.NewReader(st)
			if tc.first != nil {
				if _, err := st.Write(tc.first); err != nil {
					t.Fatal(err)
				}
				var hdr ChunkHeader
				st.SetReadDeadline(time.Now().Add(5 * time.Second))
				if err := readMsg(r, maxChunkHeader, &hdr); err != nil || hdr.Length != c0.Size {
					t.Fatalf("the good request was not answered: %+v, %v", hdr, err)
				}
				if _, err := io.CopyN(io.Discard, r, int64(hdr.Length)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.Write(tc.bad); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				st.CloseWrite()
			}
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, r)
			if err == nil || isTimeout(err) {
				t.Fatalf("stream not reset after the violation: read %d bytes, then %v", n, err)
			}
			if n != 0 {
				t.Fatalf("the offending request got %d bytes of answer", n)
			}
			waitFor(t, 5*time.Second, "the offending peer is still connected", func() bool { return !an.connected(att.ID()) })
			an.checkHonest(t)
		})
	}
}

// TestBadRequestsAnsweredWithoutDisconnect: requests that are well-formed
// but cannot be served get an error answer on a live stream, and the peer
// stays connected. (Each would fail if the server treated it as a
// violation, or crashed on it.)
func TestBadRequestsAnsweredWithoutDisconnect(t *testing.T) {
	an := newAbuseNet(t, 300<<10)
	att := an.attacker(t)
	c0 := an.ix[0]
	h := an.pi.Path.Hash[:]
	absent := nix.PathHash{9}
	cases := []struct {
		name string
		req  ChunkRequest
	}{
		{"absent chunk", ChunkRequest{Chunk: make([]byte, 32), Size: 100}},
		{"chunk with the wrong size", ChunkRequest{Chunk: c0.ID[:], Size: c0.Size - 1}},
		{"absent path", ChunkRequest{Path: absent[:], Length: 10}},
		{"range past the end", ChunkRequest{Path: h, Offset: uint64(len(an.nar)) - 5, Length: 10}},
		{"range offset overflows", ChunkRequest{Path: h, Offset: math.MaxUint64, Length: 1}},
		{"range offset past the end", ChunkRequest{Path: h, Offset: math.MaxInt64, Length: MaxRangeLen}},
	}
	st, err := att.NewStream(an.ctx, an.a.ID(), ProtoChunks)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(st)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each bad request is followed by a good one on the same stream.
			tc.req.Seq = uint64(2 * i)
			good := ChunkRequest{Seq: uint64(2*i + 1), Chunk: c0.ID[:], Size: c0.Size}
			if err := writeMsg(st, &tc.req); err != nil {
				t.Fatal(err)
			}
			if err := writeMsg(st, &good); err != nil {
				t.Fatal(err)
			}
			var hdr ChunkHeader
			if err := readMsg(r, maxChunkHeader, &hdr); err != nil {
				t.Fatal(err)
			}
			if hdr.Seq != tc.req.Seq || hdr.Err == "" || hdr.Length != 0 {
				t.Fatalf("answer %+v, want an error for seq %d", hdr, tc.req.Seq)
			}
			hdr = ChunkHeader{}
			if err := readMsg(r, maxChunkHeader, &hdr); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, hdr.Length)
			if _, err := io.ReadFull(r, data); err != nil {
				t.Fatal(err)
			}
			if hdr.Seq != good.Seq || hdr.Err != "" || chunk.Sum(data) != c0.ID {
				t.Fatalf("the good request after it got %+v", hdr)
			}
		})
	}
	// have with nothing held, and with no hashes at all.
	for _, req := range []HaveRequest{{Hashes: hashes(100)}, {}} {
		hs, err := att.NewStream(an.ctx, an.a.ID(), ProtoHave)
		if err != nil {
			t.Fatal(err)
		}
		hs.SetDeadline(time.Now().Add(5 * time.Second))
		if err := writeMsg(hs, &req); err != nil {
			t.Fatal(err)
		}
		hs.CloseWrite()
		var resp HaveResponse
		if err := readMsg(bufio.NewReader(hs), maxHaveResponse, &resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp.Bitmap, make([]byte, (len(req.Hashes)+7)/8)) {
			t.Fatalf("bitmap %x for hashes nobody has", resp.Bitmap)
		}
		hs.Close()
	}
	// A stream opened and closed without a request is not a violation.
	es, err := att.NewStream(an.ctx, an.a.ID(), ProtoInfo)
	if err != nil {
		t.Fatal(err)
	}
	es.CloseWrite()
	if n, err := readAll(es, 5*time.Second); n != 0 || isTimeout(err) {
		t.Fatalf("empty info stream: %d bytes, %v", n, err)
	}
	holdsFor(t, 100*time.Millisecond, "a peer that sent only well-formed requests was disconnected",
		func() bool { return an.connected(att.ID()) })
	an.checkHonest(t)
}

// allocDuring returns how many bytes the process allocated while fn ran
// (cumulative, so it catches a buffer that was allocated and freed).
func allocDuring(fn func()) uint64 {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// TestMillionHashesRefusedWithoutAllocating asks for 10^6 hashes at once,
// framed honestly (21 MB, over the request cap) and framed within the cap
// but claiming 10^6 array elements. The serving node must refuse both
// without allocating for them: the whole process may allocate a few MB
// while it happens (the attack itself writes from one reused buffer), far
// below the ≥ 21 MB that reading the request would take.
func TestMillionHashesRefusedWithoutAllocating(t *testing.T) {
	const n = 1_000_000
	const limit = 6 << 20
	an := newAbuseNet(t, 64<<10)
	att := an.attacker(t)
	for _, proto := range []protocol.ID{ProtoHave, ProtoInfo} {
		for _, framing := range []string{"honest length", "length within the cap"} {
			t.Run(string(proto)+"/"+framing, func(t *testing.T) {
				if !an.connected(att.ID()) {
					an.reconnect(t, att)
				}
				var sent int64
				var readErr error
				var read int64
				grew := allocDuring(func() {
					st, err := att.NewStream(an.ctx, an.a.ID(), proto)
					if err != nil {
						t.Fatal(err)
					}
					defer st.Reset()
					elem := cat([]byte{0x54}, make([]byte, 20))
					body := cat(haveArrayHeader(n))
					length := uint64(len(body) + n*len(elem))
					if framing != "honest length" {
						length = maxRequest
					}
					chunk := bytes.Repeat(elem, 64<<10/len(elem))
					go func() {
						// Writes fail once the server resets the stream.
						st.SetWriteDeadline(time.Now().Add(10 * time.Second))
						if _, err := st.Write(cat(binary.AppendUvarint(nil, length), body)); err != nil {
							return
						}
						for left := n * len(elem); left > 0; left -= len(chunk) {
							k, err := st.Write(chunk[:min(left, len(chunk))])
							atomic.AddInt64(&sent, int64(k))
							if err != nil {
								return
							}
						}
					}()
					read, readErr = readAll(st, 10*time.Second)
					waitFor(t, 5*time.Second, "the offending peer is still connected", func() bool { return !an.connected(att.ID()) })
				})
				t.Logf("attacker sent %d bytes before the reset; process allocated %d KiB", atomic.LoadInt64(&sent), grew>>10)
				if readErr == nil || isTimeout(readErr) || read != 0 {
					t.Fatalf("got %d bytes and %v, want a reset and nothing", read, readErr)
				}
				if grew > limit {
					t.Fatalf("the process allocated %d MiB while refusing the request (limit %d MiB)", grew>>20, limit>>20)
				}
				an.checkHonest(t)
			})
		}
	}
}

// TestStreamFlood: a trusted but greedy peer opens 500 chunks streams at
// once, each asking for a chunk and then holding the stream open. At most
// the per-peer chunks limit of them may be served; the rest are refused by
// the resource manager; and an honest peer's have, info and fetch succeed
// both during the flood and while the greedy peer holds its streams.
func TestStreamFlood(t *testing.T) {
	const streams = 500
	an := newAbuseNet(t, 1<<20)
	att := an.attacker(t)
	perPeer := 0
	for _, l := range protocolLimits {
		if l.proto == ProtoChunks {
			perPeer = l.streamsPeer
		}
	}
	c0 := an.ix[0]
	release := make(chan struct{})
	var served, refused atomic.Int32
	var attempts sync.WaitGroup
	var holders sync.WaitGroup
	for range streams {
		attempts.Add(1)
		holders.Add(1)
		go func() {
			defer holders.Done()
			ok := false
			defer func() {
				if !ok {
					refused.Add(1)
					attempts.Done()
				}
			}()
			st, err := att.NewStream(an.ctx, an.a.ID(), ProtoChunks)
			if err != nil {
				return
			}
			defer st.Reset()
			st.SetReadDeadline(time.Now().Add(20 * time.Second))
			if err := writeMsg(st, &ChunkRequest{Chunk: c0.ID[:], Size: c0.Size}); err != nil {
				return
			}
			r := bufio.NewReader(st)
			var hdr ChunkHeader
			if err := readMsg(r, maxChunkHeader, &hdr); err != nil || hdr.Length != c0.Size {
				return
			}
			if _, err := io.CopyN(io.Discard, r, int64(hdr.Length)); err != nil {
				return
			}
			ok = true
			served.Add(1)
			attempts.Done()
			<-release // hold the stream: the server waits for the next request
		}()
	}
	// Honest traffic while the streams are being opened.
	flooding := make(chan struct{})
	honestErr := make(chan error, 1)
	go func() {
		for {
			if err := an.honest(); err != nil {
				honestErr <- err
				return
			}
			select {
			case <-flooding:
				honestErr <- nil
				return
			default:
			}
		}
	}()
	attempts.Wait()
	close(flooding)
	if err := <-honestErr; err != nil {
		t.Errorf("the honest peer failed during the flood: %v", err)
	}
	t.Logf("%d streams served, %d refused; %d chunks streams open on the server", served.Load(), refused.Load(), serverStreams(an.a, att.ID(), ProtoChunks))
	if s := int(served.Load()); s < 1 || s > perPeer {
		t.Errorf("%d of %d streams served, want 1..%d (the per-peer chunks limit)", s, streams, perPeer)
	}
	if k := serverStreams(an.a, att.ID(), ProtoChunks); k > perPeer {
		t.Errorf("the server holds %d chunks streams of one peer, more than its limit of %d", k, perPeer)
	}
	// While the greedy peer holds every stream it got:
	an.checkHonest(t)
	close(release)
	holders.Wait()
}

// TestSilentStreamFlood: a peer opens hundreds of streams and never
// negotiates a protocol on them. Until the negotiation times out they sit
// in the resource manager's transient scope, which all peers share; an
// honest peer must still get its streams.
func TestSilentStreamFlood(t *testing.T) {
	const streams = 600
	an := newAbuseNet(t, 256<<10)
	att := an.attacker(t)
	var opened atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []network.Stream
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Below multistream: a bare muxer stream with no protocol.
			st, err := att.Network().NewStream(an.ctx, an.a.ID())
			if err != nil {
				return
			}
			opened.Add(1)
			mu.Lock()
			held = append(held, st)
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer func() {
		for _, st := range held {
			st.Reset()
		}
	}()
	// The server accepts them (or not) in the background: count once the
	// count stops changing.
	k := settled(func() int {
		k := 0
		for _, c := range an.a.Host().Network().ConnsToPeer(att.ID()) {
			k += len(c.GetStreams())
		}
		return k
	})
	t.Logf("%d silent streams opened, %d accepted by the server", opened.Load(), k)
	limit := 32 // what newLimiter allows a peer beyond trove's protocols
	for _, l := range protocolLimits {
		limit += l.streamsPeer
	}
	if k > limit {
		t.Errorf("the server accepted %d silent streams of one peer, above the per-peer cap of %d", k, limit)
	}
	an.checkHonest(t)
}

// TestCancelledRequestKeepsConnection: a client that gives up on a request
// resets its stream (Fetch does when its context ends). That is not a
// protocol violation: the server must not disconnect the peer.
func TestCancelledRequestKeepsConnection(t *testing.T) {
	for _, listen := range []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"} {
		t.Run(listen, func(t *testing.T) { testCancelledRequestKeepsConnection(t, listen) })
	}
}

func testCancelledRequestKeepsConnection(t *testing.T, listen string) {
	an := newAbuseNet(t, 4<<20, listen)
	conns := an.a.Host().Network().ConnsToPeer(an.b.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	sameConn := func() bool {
		c := an.a.Host().Network().ConnsToPeer(an.b.ID())
		return len(c) == 1 && c[0].ID() == conns[0].ID()
	}
	// A raw stream reset while the server waits for the next request.
	st, err := an.b.Host().NewStream(an.ctx, an.a.ID(), ProtoChunks)
	if err != nil {
		t.Fatal(err)
	}
	c0 := an.ix[0]
	if err := writeMsg(st, &ChunkRequest{Chunk: c0.ID[:], Size: c0.Size}); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(st)
	var hdr ChunkHeader
	if err := readMsg(r, maxChunkHeader, &hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(hdr.Length)); err != nil {
		t.Fatal(err)
	}
	st.Reset()
	waitFor(t, 2*time.Second, "the server still holds the reset stream", func() bool { return serverStreams(an.a, an.b.ID(), ProtoChunks) == 0 })
	if !sameConn() {
		t.Fatal("the server disconnected a peer that reset a chunks stream")
	}
	// Fetches cancelled part-way, at different points.
	var wants []ChunkWant
	for _, c := range an.ix {
		wants = append(wants, ChunkWant{Chunk: c.ID, Size: c.Size})
	}
	for stop := range 6 {
		ctx, cancel := context.WithCancel(an.ctx)
		err := an.b.Fetch(ctx, an.a.ID(), wants, 1+stop%3, func(i int, data []byte, err error) error {
			if i == stop {
				cancel()
			}
			return err
		})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled fetch returned %v", err)
		}
	}
	holdsFor(t, 100*time.Millisecond, "the server disconnected a peer that cancelled fetches", sameConn)
	an.checkHonest(t)
}

// TestNeverReads: a peer asks for 256 MiB of ranges and never reads. The
// server must stop at the flow-control window instead of buffering the
// answers, and reset the stream when the write deadline passes.
func TestNeverReads(t *testing.T) {
	setForTest(t, &writeTimeout, 500*time.Millisecond)
	an := newAbuseNet(t, 8<<20)
	att := an.attacker(t)
	const requests = 64
	var st network.Stream
	grew := allocDuring(func() {
		var err error
		st, err = att.NewStream(an.ctx, an.a.ID(), ProtoChunks)
		if err != nil {
			t.Fatal(err)
		}
		var reqs bytes.Buffer
		for i := range requests {
			writeMsg(&reqs, &ChunkRequest{Seq: uint64(i), Path: an.pi.Path.Hash[:], Offset: uint64(i%2) << 20, Length: MaxRangeLen})
		}
		if _, err := st.Write(reqs.Bytes()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 1*time.Second, "the server never opened the stream", func() bool { return serverStreams(an.a, att.ID(), ProtoChunks) == 1 })
		waitFor(t, writeTimeout+5*time.Second, "the server still holds the stream of a peer that does not read",
			func() bool { return serverStreams(an.a, att.ID(), ProtoChunks) == 0 })
	})
	n, err := readAll(st, 5*time.Second)
	t.Logf("the peer could read %d KiB of %d MiB asked for before the reset (%v); process allocated %d MiB", n>>10, requests*MaxRangeLen>>20, err, grew>>20)
	if err == nil || isTimeout(err) {
		t.Fatalf("stream ended with %v, want a reset", err)
	}
	if n >= requests*MaxRangeLen {
		t.Fatal("the whole answer arrived")
	}
	if grew > 48<<20 {
		t.Fatalf("the process allocated %d MiB serving a peer that does not read", grew>>20)
	}
	an.checkHonest(t)
}

// TestSlowPeerStreamReset: a request that does not arrive within the idle
// timeout (a stalled client, or a client whose consumer is slow) costs the
// peer that stream, not its connection: its other streams carry on.
func TestSlowPeerStreamReset(t *testing.T) {
	setForTest(t, &idleTimeout, 300*time.Millisecond)
	an := newAbuseNet(t, 1<<20)
	att := an.attacker(t)
	conns := an.a.Host().Network().ConnsToPeer(att.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	cases := []struct {
		name  string
		proto protocol.ID
		send  []byte
	}{
		{"have/nothing sent", ProtoHave, nil},
		{"have/half a length", ProtoHave, []byte{0x80}},
		{"info/half a message", ProtoInfo, cat(binary.AppendUvarint(nil, 30), []byte{0xa1, 0x01})},
		{"chunks/no second request", ProtoChunks, msg(&ChunkRequest{Chunk: an.ix[0].ID[:], Size: an.ix[0].Size})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := att.NewStream(an.ctx, an.a.ID(), tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Reset()
			if _, err := st.Write(tc.send); err != nil && tc.send != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = readAll(st, 5*time.Second)
			if err == nil || isTimeout(err) {
				t.Fatalf("stalled stream ended with %v, want a reset", err)
			}
			if d := time.Since(start); d > idleTimeout+2*time.Second {
				t.Fatalf("stalled stream reset after %v", d)
			}
			holdsFor(t, 50*time.Millisecond, "a slow peer lost its connection, not only the stalled stream", func() bool {
				c := an.a.Host().Network().ConnsToPeer(att.ID())
				return len(c) == 1 && c[0].ID() == conns[0].ID()
			})
		})
	}
	an.checkHonest(t)
}

// TestUntrustedPeerGetsNothing: a peer outside the trust group tries all
// three protocols, asking for a path a holds, both when it dials a (the
// gater refuses the connection) and when a dialled it (an outbound
// connection, which the gater allows; the handlers refuse every stream).
// It must receive zero bytes of answer.
func TestUntrustedPeerGetsNothing(t *testing.T) {
	an := newAbuseNet(t, 300<<10)
	secret := an.pi.Path.Hash
	c0 := an.ix[0]
	reqs := []struct {
		proto protocol.ID
		req   any
	}{
		{ProtoHave, &HaveRequest{Hashes: [][]byte{secret[:]}}},
		{ProtoInfo, &InfoRequest{Hashes: [][]byte{secret[:]}}},
		{ProtoChunks, &ChunkRequest{Chunk: c0.ID[:], Size: c0.Size}},
		{ProtoChunks, &ChunkRequest{Path: secret[:], Length: 1000}},
	}
	for _, dir := range []string{"it dials", "a dials"} {
		t.Run(dir, func(t *testing.T) {
			u := rawHost(t) // not in a's trust group
			var received int64
			if dir == "it dials" {
				err := u.Connect(an.ctx, an.a.AddrInfo())
				// With TLS 1.3 the dialler may finish its handshake just
				// before a's gater closes the connection.
				waitFor(t, 5*time.Second, "a keeps a connection from an untrusted peer", func() bool {
					return len(an.a.Host().Network().ConnsToPeer(u.ID())) == 0
				})
				t.Logf("connect: %v", err)
			} else {
				if err := an.a.Connect(an.ctx, peer.AddrInfo{ID: u.ID(), Addrs: u.Addrs()}); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range reqs {
				st, err := u.NewStream(an.ctx, an.a.ID(), r.proto)
				if err != nil {
					t.Logf("%s: %v", r.proto, err)
					continue
				}
				st.SetDeadline(time.Now().Add(5 * time.Second))
				if err := writeMsg(st, r.req); err == nil {
					st.CloseWrite()
				}
				n, err := io.Copy(io.Discard, st)
				received += n
				t.Logf("%s: read %d bytes, %v", r.proto, n, err)
				if err == nil || isTimeout(err) {
					t.Errorf("%s: stream ended with %v, want a reset", r.proto, err)
				}
				st.Reset()
			}
			if received != 0 {
				t.Fatalf("an untrusted peer received %d bytes of answers", received)
			}
			if dir == "it dials" {
				if bw := an.a.bw.GetBandwidthForPeer(u.ID()); bw.TotalOut != 0 {
					t.Fatalf("a sent %d bytes to an untrusted peer that dialled it", bw.TotalOut)
				}
			}
			an.checkHonest(t)
		})
	}
}

// TestClientBlamesOnlyBadData plays a misbehaving server against the
// client. Bytes that are wrong (bad chunk data, wrong length or order,
// malformed or oversized frames, an answer cut short) must come back as a
// *BadDataError, which sync uses to drop the peer; a server that resets the
// stream or is too slow is not lying and must not be blamed.
func TestClientBlamesOnlyBadData(t *testing.T) {
	tb := NewTrustGroup(nil)
	b, _ := testNode(t, tb)
	m := rawHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Connect(ctx, peer.AddrInfo{ID: m.ID(), Addrs: m.Addrs()}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(50_000, 5)
	id := chunk.Sum(data)
	wants := []ChunkWant{{Chunk: id, Size: uint32(len(data))}, {Chunk: id, Size: uint32(len(data))}}
	answer := func(w io.Writer, seq uint64, b []byte) {
		writeMsg(w, &ChunkHeader{Seq: seq, Length: uint32(len(b))})
		w.Write(b)
	}
	other := append([]byte{data[0] ^ 1}, data[1:]...)
	cases := []struct {
		name  string
		blame bool // nil error when false and serve is "good"
		serve func(st network.Stream)
	}{
		{"good", false, func(st network.Stream) { answer(st, 0, data); answer(st, 1, data) }},
		{"reset", false, func(st network.Stream) { st.Reset() }},
		{"reset after one answer", false, func(st network.Stream) { answer(st, 0, data); st.Reset() }},
		// The sleep is the behaviour under test: a peer that answers nothing.
		{"stalls", false, func(st network.Stream) { time.Sleep(2 * time.Second) }},
		{"closes without answering", true, func(st network.Stream) {}},
		{"wrong bytes", true, func(st network.Stream) { answer(st, 0, other) }},
		{"wrong length", true, func(st network.Stream) { answer(st, 0, data[1:]) }},
		{"out of order", true, func(st network.Stream) { answer(st, 1, data) }},
		{"header over the cap", true, func(st network.Stream) { st.Write(binary.AppendUvarint(nil, maxChunkHeader+1)) }},
		{"malformed header", true, func(st network.Stream) { st.Write(frame([]byte{0xa1, 0x07, 0x00})) }},
		{"body cut short", true, func(st network.Stream) {
			writeMsg(st, &ChunkHeader{Length: uint32(len(data))})
			st.Write(data[:100])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m.SetStreamHandler(ProtoChunks, func(st network.Stream) {
				r := bufio.NewReader(st)
				for range wants {
					var req ChunkRequest
					if err := readMsg(r, maxChunkHeader, &req); err != nil {
						st.Reset()
						return
					}
				}
				tc.serve(st)
				st.Close()
			})
			fctx, fcancel := context.WithTimeout(ctx, time.Second)
			defer fcancel()
			err := b.Fetch(fctx, m.ID(), wants, 4, func(i int, got []byte, err error) error {
				if err == nil && !bytes.Equal(got, data) {
					t.Fatal("Fetch passed unverified bytes on")
				}
				return err
			})
			var bad *BadDataError
			switch {
			case tc.blame && !errors.As(err, &bad):
				t.Fatalf("Fetch returned %v, want a *BadDataError", err)
			case !tc.blame && errors.As(err, &bad):
				t.Fatalf("Fetch blamed the peer for %q: %v", tc.name, err)
			case tc.name == "good" && err != nil:
				t.Fatal(err)
			case tc.name != "good" && err == nil:
				t.Fatal("Fetch succeeded")
			}
		})
	}
	// have and info.
	h := nix.PathHash{3}
	haveCases := []struct {
		name  string
		blame bool
		serve func(st network.Stream)
	}{
		{"have/reset", false, func(st network.Stream) { st.Reset() }},
		{"have/bitmap too long", true, func(st network.Stream) { writeMsg(st, &HaveResponse{Bitmap: []byte{1, 0}}) }},
		{"info/reset", false, func(st network.Stream) { st.Reset() }},
		{"info/two answers for one hash", true, func(st network.Stream) { writeMsg(st, &InfoResponse{Infos: []*WireInfo{nil, nil}}) }},
		{"info/another path", true, func(st network.Stream) {
			ix := chunk.Index{{ID: id, Size: uint32(len(data))}}
			pi := &nix.PathInfo{Path: nix.Path{Hash: nix.PathHash{4}, Name: "x"}, NarSize: uint64(len(data)), NarHash: nix.Hash{1}}
			writeMsg(st, &InfoResponse{Infos: []*WireInfo{ToWire(pi, ix)}})
		}},
		{"info/index does not cover the NAR", true, func(st network.Stream) {
			ix := chunk.Index{{ID: id, Size: uint32(len(data))}}
			pi := &nix.PathInfo{Path: nix.Path{Hash: h, Name: "x"}, NarSize: 1, NarHash: nix.Hash{1}}
			writeMsg(st, &InfoResponse{Infos: []*WireInfo{ToWire(pi, ix)}})
		}},
	}
	for _, tc := range haveCases {
		t.Run(tc.name, func(t *testing.T) {
			handler := func(st network.Stream) {
				var req HaveRequest // the same shape as InfoRequest
				if err := readMsg(bufio.NewReader(st), maxRequest, &req); err != nil {
					st.Reset()
					return
				}
				tc.serve(st)
				st.Close()
			}
			m.SetStreamHandler(ProtoHave, handler)
			m.SetStreamHandler(ProtoInfo, handler)
			var err error
			if tc.name[:4] == "have" {
				_, err = b.Have(ctx, m.ID(), []nix.PathHash{h})
			} else {
				_, err = b.Info(ctx, m.ID(), []nix.PathHash{h})
			}
			var bad *BadDataError
			if err == nil || errors.As(err, &bad) != tc.blame {
				t.Fatalf("got %v; want an error that blames the peer: %v", err, tc.blame)
			}
		})
	}
}
