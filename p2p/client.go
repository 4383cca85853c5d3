package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multistream"
)

// requestTimeout bounds a have or info round trip.
const requestTimeout = 30 * time.Second

// BadDataError reports a peer that sent bytes that do not match what was
// asked for: sync drops such a peer and records it.
type BadDataError struct {
	Peer   peer.ID
	Detail string
}

func (e *BadDataError) Error() string {
	return fmt.Sprintf("peer %s sent bad data: %s", e.Peer, e.Detail)
}

// stream opens a stream to p that is reset when ctx ends.
func (n *Node) stream(ctx context.Context, p peer.ID, proto protocol.ID) (network.Stream, func(), error) {
	st, err := n.host.NewStream(ctx, p, proto)
	if errors.Is(err, multistream.ErrNotSupported[protocol.ID]{}) {
		return nil, nil, fmt.Errorf("peer %s does not speak %s: it runs another version of trove (upgrade both to the same release): %w", p, proto, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s stream to %s: %w", proto, p, err)
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	return st, func() { stop(); st.Close() }, nil
}

// ErrStalled is the cause a caller gives a Fetch it cuts off because the
// peer sent nothing for too long.
var ErrStalled = errors.New("peer stalled")

// SilentConnError: a Fetch was cut off for a stall on a connection while
// another connection to the peer was open, so the silent one was closed.
// A path through a NAT that forgot its mapping, or through a relay that
// lost the other end, goes silent without closing; the peer reached again
// by another way is not to blame, and is asked again on the other.
type SilentConnError struct {
	Peer peer.ID
	Err  error
}

func (e *SilentConnError) Error() string {
	return fmt.Sprintf("peer %s went silent on one connection (closed it; another is open): %v", e.Peer, e.Err)
}

func (e *SilentConnError) Unwrap() error { return e.Err }

// silentSwitch is how long a chunks stream may go without a byte while a
// newer connection to its peer is open before its own connection is
// taken for dead: a NAT that forgot its mapping, or a relay whose leg to
// the peer did, leaves the old connection silent, and the peer, reaching
// this node again, opens the newer one. Without a newer connection only
// the stall timeout ends a silent stream.
var silentSwitch = 3 * time.Second

// progressReader notes when it last read something, and how much it
// read.
type progressReader struct {
	r    io.Reader
	last atomic.Int64 // unix nanoseconds
	n    int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 {
		pr.last.Store(time.Now().UnixNano())
		pr.n += int64(n)
	}
	return n, err
}

// shrinkage counts, per peer connected, the bytes of compressed answer
// streams read and the chunk bytes they carried (Compressed).
type shrinkage struct {
	mu        sync.Mutex
	wire, raw map[peer.ID]int64
}

func (s *shrinkage) add(p peer.ID, wire, raw int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wire == nil {
		s.wire, s.raw = map[peer.ID]int64{}, map[peer.ID]int64{}
	}
	s.wire[p] += wire
	s.raw[p] += raw
}

func (s *shrinkage) forget(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.wire, p)
	delete(s.raw, p)
}

// Compressed says how many bytes the compressed answer streams from p
// took on the wire so far, and how many chunk bytes they carried: whether
// compression pays with p, measured (counted while p stays connected).
func (n *Node) Compressed(p peer.ID) (wire, raw int64) {
	n.shrink.mu.Lock()
	defer n.shrink.mu.Unlock()
	return n.shrink.wire[p], n.shrink.raw[p]
}

// watchSilence closes c, the connection of a chunks stream reading
// through in, once the stream has read nothing for silentSwitch while a
// connection to p newer than c is open. It stops with ctx; silenced says
// whether it closed c.
func (n *Node) watchSilence(ctx context.Context, p peer.ID, c network.Conn, in *progressReader) (silenced func() bool) {
	var closed atomic.Bool
	go every(ctx, silentSwitch/4, func() (more bool) {
		if time.Since(time.Unix(0, in.last.Load())) < silentSwitch {
			return true
		}
		// closed is set before c is closed: the read that the close
		// ends must find it set.
		return !n.closeSilent(p, c, c.Stat().Opened, func() { closed.Store(true) })
	})
	return closed.Load
}

// every calls f every d until ctx ends or f says there is no more to do.
func every(ctx context.Context, d time.Duration, f func() (more bool)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !f() {
			return
		}
	}
}

// closeSilent closes c, on which a stream to p went silent, if another
// connection to p opened after since is open, and says whether it did.
// If it closes c, it calls closing (if not nil) first.
func (n *Node) closeSilent(p peer.ID, c network.Conn, since time.Time, closing func()) bool {
	for _, o := range n.host.Network().ConnsToPeer(p) {
		if o != c && o.Stat().Opened.After(since) {
			n.log.Info("closing a connection that went silent; another is open", "peer", p, "addr", c.RemoteMultiaddr())
			if closing != nil {
				closing()
			}
			c.Close()
			return true
		}
	}
	return false
}

// Have asks p which of hashes it holds, in batches of MaxHaveHashes.
func (n *Node) Have(ctx context.Context, p peer.ID, hashes []nix.PathHash) ([]bool, error) {
	return inBatches(hashes, MaxHaveHashes, func(batch []nix.PathHash) ([]bool, error) {
		var resp HaveResponse
		if err := n.roundTrip(ctx, p, ProtoHave, &HaveRequest{Hashes: rawHashes(batch)}, maxHaveResponse, &resp); err != nil {
			return nil, err
		}
		if len(resp.Bitmap) != (len(batch)+7)/8 {
			return nil, &BadDataError{Peer: p, Detail: fmt.Sprintf("have bitmap of %d bytes for %d hashes", len(resp.Bitmap), len(batch))}
		}
		out := make([]bool, len(batch))
		for i := range out {
			out[i] = resp.Bitmap[i/8]&(1<<(i%8)) != 0
		}
		return out, nil
	})
}

// inBatches calls fn on consecutive batches of at most size hashes and
// concatenates the answers.
func inBatches[T any](hashes []nix.PathHash, size int, fn func([]nix.PathHash) ([]T, error)) ([]T, error) {
	out := make([]T, 0, len(hashes))
	for len(hashes) > 0 {
		batch := hashes[:min(len(hashes), size)]
		hashes = hashes[len(batch):]
		got, err := fn(batch)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func rawHashes(hs []nix.PathHash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// exchange opens a stream of proto to p and runs use on it, all within d
// (use's context ends then).
func (n *Node) exchange(ctx context.Context, p peer.ID, proto protocol.ID, d time.Duration, use func(context.Context, network.Stream) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	st, done, err := n.stream(ctx, p, proto)
	if err != nil {
		return err
	}
	defer done()
	return use(ctx, st)
}

// roundTrip sends one request on a new stream to p and reads one answer
// of at most max bytes, within requestTimeout.
func (n *Node) roundTrip(ctx context.Context, p peer.ID, proto protocol.ID, req any, max int, resp any) error {
	return n.exchange(ctx, p, proto, requestTimeout, func(ctx context.Context, st network.Stream) error {
		if err := writeMsg(st, req); err != nil {
			return fmt.Errorf("%s request to %s: %w", proto, p, err)
		}
		st.CloseWrite()
		// The answer is charged to the stream's scope while it is read, so
		// the resource manager's limits bound how many large answers (from
		// every peer asked at once) are held together; a read waits for room.
		held, err := readMsgIn(bufio.NewReaderSize(st, 64<<10), max, resp, func(n int) error {
			return reserveWait(ctx, st.Scope(), n, requestTimeout)
		})
		if held > 0 {
			st.Scope().ReleaseMemory(held)
		}
		if err != nil {
			return fmt.Errorf("%s answer from %s: %w", proto, p, err)
		}
		return nil
	})
}

// RemoteInfo is a PathInfo as a peer described it, with its chunk index:
// well-formed and self-consistent, but not yet believed.
type RemoteInfo struct {
	Info  *nix.PathInfo
	Index chunk.Index
}

// Info asks p for the PathInfos and chunk indexes of hashes; entries are nil
// where p does not hold the path.
func (n *Node) Info(ctx context.Context, p peer.ID, hashes []nix.PathHash) ([]*RemoteInfo, error) {
	return inBatches(hashes, MaxInfoHashes, func(batch []nix.PathHash) ([]*RemoteInfo, error) {
		var resp InfoResponse
		if err := n.roundTrip(ctx, p, ProtoInfo, &InfoRequest{Hashes: rawHashes(batch)}, MaxInfoResponse, &resp); err != nil {
			return nil, err
		}
		if len(resp.Infos) != len(batch) {
			return nil, &BadDataError{Peer: p, Detail: fmt.Sprintf("%d infos for %d hashes", len(resp.Infos), len(batch))}
		}
		out := make([]*RemoteInfo, len(batch))
		for i, w := range resp.Infos {
			if w == nil {
				continue
			}
			pi, ix, err := FromWire(w)
			if err != nil {
				return nil, &BadDataError{Peer: p, Detail: err.Error()}
			}
			if pi.Path.Hash != batch[i] {
				return nil, &BadDataError{Peer: p, Detail: fmt.Sprintf("asked for %s, got %s", batch[i], pi.Path)}
			}
			out[i] = &RemoteInfo{Info: pi, Index: ix}
		}
		return out, nil
	})
}

// InfoClosure asks p for the infos of the closures of roots, in one round
// trip. The result may be incomplete (the peer lacks a root, or the
// answer was cut at the size cap); callers fill gaps with Info.
func (n *Node) InfoClosure(ctx context.Context, p peer.ID, roots []nix.PathHash) ([]*RemoteInfo, error) {
	if len(roots) > MaxInfoHashes {
		roots = roots[:MaxInfoHashes]
	}
	var resp InfoResponse
	if err := n.roundTrip(ctx, p, ProtoInfo, &InfoRequest{Hashes: rawHashes(roots), Closure: true}, MaxInfoResponse, &resp); err != nil {
		return nil, err
	}
	out := make([]*RemoteInfo, 0, len(resp.Infos))
	for _, w := range resp.Infos {
		if w == nil {
			return nil, &BadDataError{Peer: p, Detail: "empty entry in a closure answer"}
		}
		pi, ix, err := FromWire(w)
		if err != nil {
			return nil, &BadDataError{Peer: p, Detail: err.Error()}
		}
		out = append(out, &RemoteInfo{Info: pi, Index: ix})
	}
	return out, nil
}

// ChunkWant is one thing to fetch over a chunks stream: a chunk by ID and
// size, or a NAR byte range of a path.
type ChunkWant struct {
	Chunk  chunk.ID
	Size   uint32
	Path   nix.PathHash // with IsRange
	Offset uint64
	Length uint32
	Range  bool
	// Defer lets the peer answer a chunk want with a *LaterError: the
	// asker fetches in a swarm and hears what other peers hold.
	Defer bool
	// Zstd, on the first want of a Fetch, asks for the answers as one
	// zstd stream (compress.go).
	Zstd bool
}

// LaterError is the answer to a want that said Defer, from a peer that
// sent that chunk to another peer, To: get it there, or ask this peer
// again after After (as the peer said: the caller bounds how long it
// waits). Busy says the peer is sending to as many peers as it will at
// once, rather than that it sent this chunk to another: ask it for
// nothing until After.
type LaterError struct {
	After time.Duration
	Busy  bool
	To    peer.ID
}

func (e *LaterError) Error() string {
	if e.Busy {
		return fmt.Sprintf("busy sending to other peers; ask again in %v", e.After)
	}
	return fmt.Sprintf("sent to another peer; ask again in %v", e.After)
}

// fetchBuf is the reading side's memory for one Fetch, recycled: a sync
// runs thousands of batches, and allocating (and zeroing) these for each
// showed up in profiles.
type fetchBuf struct {
	r    *bufio.Reader
	data []byte
}

var fetchBufs = sync.Pool{New: func() any {
	return &fetchBuf{r: bufio.NewReaderSize(nil, 256<<10), data: make([]byte, chunk.MaxSize)}
}}

// ErrNotServed is returned (wrapped) for a want the peer says it cannot serve.
var ErrNotServed = errors.New("peer does not have it")

// Fetch sends wants to p over one pipelined chunks stream and calls got
// with each answer in order. A chunk's bytes are verified against its ID
// before got sees them (a mismatch is a *BadDataError); range bytes cannot
// be verified here. data is only valid during got. A want p cannot serve
// reaches got with a nil data and an error wrapping ErrNotServed, one it
// defers (Defer) with a *LaterError; got returning an error stops the
// fetch. window bounds requests in flight.
func (n *Node) Fetch(ctx context.Context, p peer.ID, wants []ChunkWant, window int, got func(i int, data []byte, err error) error) error {
	return n.FetchMore(ctx, p, wants, window, nil, got)
}

// FetchMore is Fetch whose wants may grow while it runs: once the first
// half of the last chunk asked so far is in, more (if not nil) is asked
// for what to ask next, and that is asked on the same stream at once. The
// peer then sends it right after the chunk arriving, in the upload slot
// it gave this stream, instead of after the round trip a new request
// takes, during which its link would idle (in a room a batch is one or
// two chunks). more is called on the goroutine that calls got, between
// its calls, and the answers to what it returns reach got numbered on
// from wants; returning nothing ends the stream after the answers out.
func (n *Node) FetchMore(ctx context.Context, p peer.ID, wants []ChunkWant, window int, more func() []ChunkWant, got func(i int, data []byte, err error) error) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, done, err := n.stream(ctx, p, ProtoChunks)
	if err != nil {
		return err
	}
	defer done()
	in := &progressReader{r: st}
	in.last.Store(time.Now().UnixNano())
	silenced := n.watchSilence(ctx, p, st.Conn(), in)
	defer func() {
		switch {
		case err == nil:
		case silenced():
			err = &SilentConnError{Peer: p, Err: err}
		case errors.Is(context.Cause(ctx), ErrStalled) && n.closeSilent(p, st.Conn(), time.Time{}, nil):
			err = &SilentConnError{Peer: p, Err: err}
		}
	}()
	window = max(window, 1)
	tokens := make(chan struct{}, window)
	werr := make(chan error, 1)
	// The writer sends wants, then what more adds (extra, closed by the
	// reader once nothing more will be asked), then ends its side.
	extra := make(chan []ChunkWant, 1)
	var ended bool
	end := func() {
		if !ended {
			ended = true
			close(extra)
		}
	}
	if more == nil {
		end()
	}
	defer end()
	zstd := len(wants) > 0 && wants[0].Zstd
	wants = slices.Clip(wants) // the reader appends to wants: not to the caller's array
	first := wants
	go func() {
		bw := bufio.NewWriterSize(st, 16<<10)
		seq := 0
		send := func(ws []ChunkWant) error {
			for k, w := range ws {
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				req := ChunkRequest{Seq: uint64(seq), Zstd: seq == 0 && zstd}
				if w.Range {
					req.Path, req.Offset, req.Length = w.Path[:], w.Offset, w.Length
				} else {
					req.Chunk, req.Size, req.Defer = w.Chunk[:], w.Size, w.Defer
				}
				if err := writeMsg(bw, &req); err != nil {
					return err
				}
				seq++
				// Flush when the window is full or the list ends, so a batch of
				// small requests goes out in few packets.
				if len(tokens) == cap(tokens) || k == len(ws)-1 {
					if err := bw.Flush(); err != nil {
						return err
					}
				}
			}
			return nil
		}
		err := send(first)
		for ws := range extra {
			if err == nil {
				err = send(ws)
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = st.CloseWrite()
		}
		werr <- err
	}()
	fb := fetchBufs.Get().(*fetchBuf)
	defer fetchBufs.Put(fb)
	fb.r.Reset(in)
	defer fb.r.Reset(nil)
	var raw int64 // chunk bytes read
	if zstd {
		// The answers come as one zstd stream (compress.go).
		zs, err := decompressFrom(in, p)
		if err != nil {
			return err
		}
		defer zs.release()
		defer func() { n.shrink.add(p, in.n, raw) }()
		fb.r.Reset(zs)
	}
	r, buf := fb.r, fb.data
	readData := func(b []byte) error {
		if _, err := io.ReadFull(r, b); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: truncated chunk: %v", ErrProtocol, err)
			}
			return n.fetchErr(ctx, p, err)
		}
		return nil
	}
	for i := 0; i < len(wants); i++ {
		w := wants[i]
		var h ChunkHeader
		if err := readMsg(r, maxChunkHeader, &h); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: stream ended after %d of %d answers", ErrProtocol, i, len(wants))
			}
			return n.fetchErr(ctx, p, err)
		}
		<-tokens
		if h.Seq != uint64(i) {
			return &BadDataError{Peer: p, Detail: fmt.Sprintf("answer %d out of order (seq %d)", i, h.Seq)}
		}
		if h.Busy && h.Later == 0 {
			return &BadDataError{Peer: p, Detail: fmt.Sprintf("answer %d says busy without saying until when", i)}
		}
		if h.Later != 0 {
			if h.Err != "" || h.Length != 0 || !w.Defer || w.Range {
				return &BadDataError{Peer: p, Detail: fmt.Sprintf("answer %d says later, to a request that did not allow it or with data", i)}
			}
			var to peer.ID
			var err error
			if len(h.To) > 0 {
				to, err = peer.IDFromBytes(h.To)
			}
			if h.Busy != (len(h.To) == 0) || err != nil || to == p {
				return &BadDataError{Peer: p, Detail: fmt.Sprintf("answer %d says later without naming the peer the chunk went to, or busy naming one", i)}
			}
			after := time.Duration(h.Later) * time.Millisecond
			if err := got(i, nil, &LaterError{After: after, Busy: h.Busy, To: to}); err != nil {
				return err
			}
			continue
		}
		if h.Err != "" {
			if err := got(i, nil, fmt.Errorf("%w: %s", ErrNotServed, h.Err)); err != nil {
				return err
			}
			continue
		}
		want := w.Size
		if w.Range {
			want = w.Length
		}
		if h.Length != want {
			return &BadDataError{Peer: p, Detail: fmt.Sprintf("answer %d has %d bytes, asked for %d", i, h.Length, want)}
		}
		if int(h.Length) > cap(buf) {
			buf = make([]byte, h.Length)
		}
		data := buf[:h.Length]
		in := 0 // of data, read
		if !ended && i == len(wants)-1 {
			// Ask for what comes next once half of this chunk is in:
			// the request reaches p before the rest has gone.
			in = len(data) / 2
			if err := readData(data[:in]); err != nil {
				return err
			}
			if ws := more(); len(ws) > 0 {
				wants = append(wants, ws...)
				extra <- ws
			} else {
				end()
			}
		}
		if err := readData(data[in:]); err != nil {
			return err
		}
		if !w.Range && chunk.Sum(data) != w.Chunk {
			return &BadDataError{Peer: p, Detail: fmt.Sprintf("chunk %s does not hash to its ID", w.Chunk)}
		}
		n.countChunk(p, true, len(data))
		raw += int64(len(data))
		if err := got(i, data, nil); err != nil {
			return err
		}
	}
	end()
	return <-werr
}

func (n *Node) fetchErr(ctx context.Context, p peer.ID, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A peer that goes away (reset, closed connection) mid-chunk is not
	// lying; only one that ends its stream early on purpose is.
	if errors.Is(err, network.ErrReset) || n.host.Network().Connectedness(p) != network.Connected {
		return fmt.Errorf("fetching from %s: the peer went away: %w", p, err)
	}
	if errors.Is(err, ErrProtocol) {
		return &BadDataError{Peer: p, Detail: err.Error()}
	}
	return fmt.Errorf("fetching from %s: %w", p, err)
}
