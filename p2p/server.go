package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"

	"github.com/klauspost/compress/zstd"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/semaphore"
)

// Content is what the server answers from; the embedded store
// (*store.Store) implements it.
type Content interface {
	PathInfo(h nix.PathHash) (*nix.PathInfo, error)
	ChunkIndexOf(h nix.PathHash) (chunk.Index, error)
	ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error)
	WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error
	Closure(roots ...nix.Path) ([]*nix.PathInfo, error)
}

// Store is Content that can also read a chunk into a buffer without
// hashing it again, as the embedded store's ChunkData does.
type Store interface {
	Content
	ChunkData(ctx context.Context, id chunk.ID, size uint32, dst []byte) ([]byte, error)
}

// StoreContent serves a Store to peers without re-hashing each chunk it
// sends: receivers verify every chunk on arrival. Use it as
// Config.Content; a bare store also works, verifying twice.
type StoreContent struct{ Store }

// ReadChunk reads a chunk for a peer, into a buffer that Recycle takes
// back once it is sent.
func (c StoreContent) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	buf := chunkBufs.Get().(*[chunk.MaxSize]byte)
	data, err := c.ChunkData(ctx, id, size, buf[:])
	if err != nil {
		chunkBufs.Put(buf)
	}
	return data, err
}

// Recycle takes back a chunk ReadChunk returned.
func (StoreContent) Recycle(b []byte) {
	if cap(b) == chunk.MaxSize {
		chunkBufs.Put((*[chunk.MaxSize]byte)(b[:chunk.MaxSize]))
	}
}

// recycler is Content whose chunk buffers go back to it once sent.
type recycler interface{ Recycle([]byte) }

// answerWriters are the chunks streams' write buffers, recycled: a sync
// opens a stream per batch of chunks.
var answerWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, answerBufSize) }}

const answerBufSize = 512 << 10

// chunkBufs recycles the buffers chunks are served from: a gigabyte of
// fresh 64 KiB slices, zeroed and collected, cost a tenth of serving them.
var chunkBufs = sync.Pool{New: func() any { return new([chunk.MaxSize]byte) }}

// Timeouts on the serving side: a request must arrive within idleTimeout of
// the previous one, and a response must be taken by the peer within
// writeTimeout, or the stream is reset (a peer that never reads its
// responses holds nothing for long). Variables so that tests can shorten
// them; a server copies them when it starts.
var (
	idleTimeout  = 60 * time.Second
	writeTimeout = 30 * time.Second
	// memoryWait bounds how long a server waits for room under the
	// resource manager's memory limits (other streams finishing their
	// answers) before it gives up on a stream.
	memoryWait = 10 * time.Second
)

type server struct {
	node      *Node
	content   Content
	manifests ManifestSource
	log       *slog.Logger
	// idle, write and memWait are idleTimeout, writeTimeout and
	// memoryWait as they were when the node started.
	idle, write, memWait time.Duration
	// loads lets one manifest be loaded at a time (handleManifest).
	loads *semaphore.Weighted
}

// serve wraps a handler: it refuses peers outside the trust group, resets
// the stream on any error, and disconnects a peer that broke the protocol.
func (s *server) serve(name string, h func(ctx context.Context, st network.Stream, r *bufio.Reader) error) network.StreamHandler {
	return func(st network.Stream) {
		p := st.Conn().RemotePeer()
		if !s.node.gater.allowed(p) {
			s.log.Warn("refused stream from a peer outside the trust group", "peer", p, "protocol", name)
			st.Reset()
			return
		}
		ctx, cancel := context.WithCancel(s.node.ctx)
		defer cancel()
		err := h(ctx, st, bufio.NewReaderSize(st, 4<<10))
		switch {
		case err == nil || errors.Is(err, io.EOF):
			st.Close()
		case errors.Is(err, ErrProtocol):
			s.log.Warn("peer broke the protocol; disconnecting", "peer", p, "protocol", name, "err", err)
			st.Reset()
			s.node.host.Network().ClosePeer(p)
		default:
			s.log.Debug("stream ended", "peer", p, "protocol", name, "err", err)
			st.Reset()
		}
	}
}

// Every buffer a server holds for a peer is reserved in the stream's
// resource scope first, so the memory limits of limits.go (per peer and
// protocol, and in all) bound what peers can make it hold.

// reserveWait reserves n bytes in sc, waiting while its limits are full
// (other streams finishing free memory) for at most wait, or until ctx
// ends.
func reserveWait(ctx context.Context, sc network.ResourceScope, n int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	delay := 2 * time.Millisecond
	for {
		err := sc.ReserveMemory(n, network.ReservationPriorityMedium)
		if err == nil {
			return nil
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("no room for %d bytes under the memory limits: %w", n, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// writeDeadline keeps a long-lived stream's write deadline at least half
// of timeout ahead, setting it only when it fell behind: a stream that
// writes many small messages (a haves subscription, hundreds a second)
// spent a tenth of each write setting it anew. A write still fails
// after at most timeout, and at least half of it.
type writeDeadline struct{ at time.Time }

func (d *writeDeadline) extend(st network.Stream, timeout time.Duration) {
	now := time.Now()
	if d.at.Sub(now) < timeout/2 {
		d.at = now.Add(timeout)
		st.SetWriteDeadline(d.at)
	}
}

// reserver reserves memory in st's scope for the server.
func (s *server) reserver(ctx context.Context, st network.Stream) func(n int) error {
	return func(n int) error { return reserveWait(ctx, st.Scope(), n, s.memWait) }
}

// reserve charges n bytes to the stream's resource scope for the life of
// fn. An answer costs its bytes twice: as built, and encoded.
func (s *server) reserve(ctx context.Context, st network.Stream, n int, fn func() error) error {
	if err := s.reserver(ctx, st)(n); err != nil {
		return fmt.Errorf("%s answer: %w", st.Protocol(), err)
	}
	defer st.Scope().ReleaseMemory(n)
	return fn()
}

// readRequest reads a request of at most max bytes into v, charged to
// st's scope; the caller releases the returned bytes when done with v.
// oneRequest makes a handler of a protocol that takes one request of type
// Req: it reads the request within the idle deadline, charging its memory
// to the stream until handle returns.
func oneRequest[Req any](s *server, handle func(context.Context, network.Stream, *Req) error) func(context.Context, network.Stream, *bufio.Reader) error {
	return func(ctx context.Context, st network.Stream, r *bufio.Reader) error {
		st.SetReadDeadline(time.Now().Add(s.idle))
		var req Req
		held, err := s.readRequest(ctx, st, r, maxRequest, &req)
		if err != nil {
			return err
		}
		defer st.Scope().ReleaseMemory(held)
		return handle(ctx, st, &req)
	}
}

func (s *server) readRequest(ctx context.Context, st network.Stream, r *bufio.Reader, max int, v any) (int, error) {
	held, err := readMsgIn(r, max, v, s.reserver(ctx, st))
	if err != nil && held > 0 {
		st.Scope().ReleaseMemory(held)
		held = 0
	}
	return held, err
}

func pathHashes(raw [][]byte, max int) ([]nix.PathHash, error) {
	if len(raw) > max {
		return nil, fmt.Errorf("%w: %d hashes in one request, at most %d", ErrProtocol, len(raw), max)
	}
	out := make([]nix.PathHash, len(raw))
	for i, b := range raw {
		if len(b) != nix.HashLen {
			return nil, fmt.Errorf("%w: a store path hash has %d bytes, not %d", ErrProtocol, len(b), nix.HashLen)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

func (s *server) handleHave(ctx context.Context, st network.Stream, req *HaveRequest) error {
	hashes, err := pathHashes(req.Hashes, MaxHaveHashes)
	if err != nil {
		return err
	}
	bitmap := make([]byte, (len(hashes)+7)/8)
	for i, h := range hashes {
		if _, err := s.content.PathInfo(h); err == nil {
			bitmap[i/8] |= 1 << (i % 8)
		}
	}
	st.SetWriteDeadline(time.Now().Add(s.write))
	return writeMsg(st, &HaveResponse{Bitmap: bitmap})
}

func (s *server) handleInfo(ctx context.Context, st network.Stream, req *InfoRequest) error {
	hashes, err := pathHashes(req.Hashes, MaxInfoHashes)
	if err != nil {
		return err
	}
	if req.Closure {
		return s.infoClosure(ctx, st, hashes)
	}
	resp := InfoResponse{Infos: make([]*WireInfo, len(hashes))}
	size, items := 0, len(hashes)
	for i, h := range hashes {
		w := s.wireInfo(h)
		if w == nil {
			continue
		}
		n := w.SizeBound()
		if size+n > MaxInfoResponse || items+w.Items() > maxInfoItems {
			break // the client asks again for the rest
		}
		size, items = size+n, items+w.Items()
		resp.Infos[i] = w
	}
	return s.reserve(ctx, st, 2*size, func() error {
		st.SetWriteDeadline(time.Now().Add(s.write))
		return writeMsg(st, &resp)
	})
}

// wireInfo is the wire form of path h, or nil if it is not here or cannot
// travel (more references than a client takes; signatures beyond MaxSigs
// are left out).
func (s *server) wireInfo(h nix.PathHash) *WireInfo {
	pi, err := s.content.PathInfo(h)
	if err != nil || len(pi.References) > MaxReferences {
		return nil
	}
	ix, err := s.content.ChunkIndexOf(h)
	if err != nil {
		return nil
	}
	w := ToWire(pi, ix)
	w.Sigs = w.Sigs[:min(len(w.Sigs), MaxSigs)]
	return w
}

// infoClosure answers a Closure info request: the infos of everything in
// the closures of the requested paths it holds, referrers first (the
// reverse of Content.Closure's order), so that an answer the caps cut
// short holds every referrer of what it holds: the client's next request,
// for the references it lacks, has none of it in its closure, and each
// answer brings only paths the client has not seen. Cut references first,
// as it was until 2026-12-05, an answer kept the bottom of the closure and
// left out the requested roots; each request for the rest brought the
// same 4,096 infos back and a path or two more, and planning a closure of
// 6,000 paths took some 1,900 round trips and 2.6 GB of answers.
func (s *server) infoClosure(ctx context.Context, st network.Stream, hashes []nix.PathHash) error {
	var roots []nix.Path
	for _, h := range hashes {
		if pi, err := s.content.PathInfo(h); err == nil {
			roots = append(roots, pi.Path)
		}
	}
	var resp InfoResponse
	size, items := 0, 0
	if len(roots) > 0 {
		infos, err := s.content.Closure(roots...)
		if err != nil {
			return err
		}
		for _, pi := range slices.Backward(infos) {
			w := s.wireInfo(pi.Path.Hash)
			if w == nil {
				continue
			}
			n := w.SizeBound()
			// The client's decoder takes at most MaxClosureInfos infos
			// and maxInfoItems items.
			if size+n > MaxInfoResponse || len(resp.Infos) == MaxClosureInfos || items+w.Items() > maxInfoItems {
				resp.Truncated = true // the client asks level by level for the rest
				break
			}
			size, items = size+n, items+w.Items()
			resp.Infos = append(resp.Infos, w)
		}
	}
	return s.reserve(ctx, st, 2*size, func() error {
		st.SetWriteDeadline(time.Now().Add(s.write))
		return writeMsg(st, &resp)
	})
}

// handleChunks serves a pipelined stream of chunk requests, in order.
func (s *server) handleChunks(ctx context.Context, st network.Stream, r *bufio.Reader) error {
	// A reader goroutine parses requests and reads their data from the
	// store a few answers ahead, while this one writes to the network, so
	// disk and network overlap instead of taking turns. The read-ahead
	// depth bounds the memory one stream holds.
	type answer struct {
		seq   uint64
		data  []byte
		later deferral // for the peer: ask again later (upload.go)
		zstd  bool     // the request asked for compressed answers (compress.go)
		serr  error    // for the peer: we cannot serve this one
		err   error    // ends the stream (io.EOF: the peer is done asking)
		cost  int64    // of the read-ahead budget, returned once sent
		// isChunk: data came from Content.ReadChunk (not a range), id
		isChunk bool
		id      chunk.ID
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := st.Conn().RemotePeer()
	rec, _ := s.content.(recycler)
	sl := &slot{s: &s.node.slots, p: from}
	defer sl.close()
	// The write buffer and every answer prepared ahead are charged to the
	// stream's resource scope: a peer holding many streams open without
	// reading is held to the chunks protocol's memory limits (per peer and
	// in all), waiting for room and then refused.
	sc := st.Scope()
	if err := reserveWait(ctx, sc, answerBufSize, s.memWait); err != nil {
		return fmt.Errorf("chunks stream: %w", err)
	}
	defer sc.ReleaseMemory(answerBufSize)
	answers := make(chan answer, chunkReadAhead)
	// Answers prepared ahead are bounded in bytes as well as in number:
	// a peer asking for 4 MiB ranges and never reading must not make us
	// hold chunkReadAhead of them.
	budget := semaphore.NewWeighted(readAheadBytes)
	hold := func(n int64) error {
		if err := budget.Acquire(ctx, n); err != nil {
			return err
		}
		if err := reserveWait(ctx, sc, int(n), s.memWait); err != nil {
			budget.Release(n)
			return fmt.Errorf("chunks stream: %w", err)
		}
		return nil
	}
	release := func(n int64) {
		sc.ReleaseMemory(int(n))
		budget.Release(n)
	}
	go func() {
		defer close(answers)
		for {
			st.SetReadDeadline(time.Now().Add(s.idle))
			var req ChunkRequest
			a := answer{}
			if a.err = readMsg(r, maxChunkHeader, &req); a.err == nil {
				// A chunk is read into a whole chunk.MaxSize buffer, whatever
				// its size.
				a.cost = int64(req.Length)
				if len(req.Chunk) > 0 {
					a.cost = chunk.MaxSize
				}
				a.cost = min(max(a.cost, 1), readAheadBytes)
				if err := hold(a.cost); err != nil {
					// Nothing to send: end the stream (a reset, not a
					// protocol violation).
					select {
					case answers <- answer{err: err}:
					case <-ctx.Done():
					}
					return
				}
				var buf bytes.Buffer
				a.seq = req.Seq
				a.data, a.later, a.serr, a.err = s.chunkData(ctx, from, sl, &req, &buf)
				if a.isChunk = len(req.Chunk) > 0; a.isChunk && len(req.Chunk) == len(a.id) {
					a.id = chunk.ID(req.Chunk)
				}
				a.zstd = req.Zstd
			}
			select {
			case answers <- a:
			case <-ctx.Done():
				return
			}
			if a.err != nil {
				return
			}
		}
	}()
	// A buffer bigger than a chunk: header and data of several answers go
	// to the muxer as one write, rather than a small frame for each header.
	bw := answerWriters.Get().(*bufio.Writer)
	bw.Reset(st)
	defer func() {
		bw.Reset(nil)
		answerWriters.Put(bw)
	}()
	// The first request says whether all answers go as one zstd stream.
	var out io.Writer = bw
	var zw *zstd.Encoder
	flush := func() error {
		if zw != nil {
			if err := zw.Flush(); err != nil {
				return err
			}
		}
		return bw.Flush()
	}
	first := true
	for a := range answers {
		if first && a.err == nil && a.zstd {
			if err := reserveWait(ctx, sc, zstdEncoderMem, s.memWait); err != nil {
				return fmt.Errorf("chunks stream: %w", err)
			}
			defer sc.ReleaseMemory(zstdEncoderMem)
			zw = compressTo(bw)
			defer releaseEncoder(zw)
			out = zw
		}
		first = false
		if a.err != nil {
			if errors.Is(a.err, io.EOF) {
				if zw != nil {
					if err := zw.Close(); err != nil {
						return err
					}
				}
				return bw.Flush()
			}
			return a.err
		}
		st.SetWriteDeadline(time.Now().Add(s.write))
		switch {
		case a.later.after > 0:
			ms := uint32(max(1, a.later.after.Milliseconds()))
			if err := writeMsg(out, &ChunkHeader{Seq: a.seq, Later: ms, Busy: a.later.busy, To: []byte(a.later.to)}); err != nil {
				return err
			}
		case a.serr != nil:
			if err := writeMsg(out, &ChunkHeader{Seq: a.seq, Err: a.serr.Error()}); err != nil {
				return err
			}
		default:
			if err := writeMsg(out, &ChunkHeader{Seq: a.seq, Length: uint32(len(a.data))}); err != nil {
				return err
			}
			if _, err := out.Write(a.data); err != nil {
				return err
			}
			s.node.countChunk(from, false, len(a.data))
			if a.isChunk {
				s.node.serves.sent(from, a.id, time.Now())
			}
			if rec != nil && a.isChunk {
				rec.Recycle(a.data) // written: bw (or zw) and the muxer copied it
			}
		}
		release(a.cost)
		// Flush when nothing more is ready, not after each chunk.
		if len(answers) == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		// Shutting down with answers owed: a reset, which the peer reads
		// as us going away, not as a stream ended early on purpose.
		return err
	}
	return flush()
}

// chunkReadAhead is how many answers a chunks stream prepares ahead of
// the one it is sending, and readAheadBytes how many bytes they may hold.
const (
	chunkReadAhead = 4
	readAheadBytes = 4 << 20
)

// chunkData reads what req, from peer p on a stream holding or wanting
// upload slot sl, asks for. later (a chunk sent to another peer, or
// every slot taken) and serr (we do not have it) are answers for the
// peer; err is a protocol violation.
func (s *server) chunkData(ctx context.Context, p peer.ID, sl *slot, req *ChunkRequest, buf *bytes.Buffer) (data []byte, later deferral, serr, err error) {
	switch {
	case len(req.Chunk) > 0 && len(req.Path) == 0:
		if len(req.Chunk) != len(chunk.ID{}) || req.Size == 0 || req.Size > chunk.MaxSize {
			return nil, deferral{}, nil, fmt.Errorf("%w: bad chunk request", ErrProtocol)
		}
		id := chunk.ID(req.Chunk)
		// A node that is fetching serves what it is asked, and remembers
		// none of it (upload.go).
		only := !s.node.fetching()
		after, to, undo := s.node.serves.claim(p, id, req.Defer && only, only, time.Now(), s.node.connected)
		if after > 0 {
			return nil, deferral{after: after, to: to}, nil, nil
		}
		// A request that may be deferred waits for a slot; one sent
		// elsewhere (above) does not take one.
		if req.Defer && !sl.take() {
			undo()
			return nil, deferral{after: s.node.slots.wait(s.node.stretch(busyAfter)), busy: true}, nil, nil
		}
		data, serr := s.content.ReadChunk(ctx, id, req.Size)
		if serr != nil && ctx.Err() == nil {
			// Not in the store: maybe verified already by a fetch in
			// progress here, in a spool.
			if d, err := s.node.partialChunk(ctx, id, req.Size); err == nil {
				data, serr = d, nil
			}
		}
		if serr != nil {
			undo()
		}
		if serr != nil && ctx.Err() != nil {
			return nil, deferral{}, nil, ctx.Err() // shutting down, not "we lack it"
		}
		return data, deferral{}, serr, nil
	case len(req.Path) > 0 && len(req.Chunk) == 0:
		if len(req.Path) != nix.HashLen || req.Length == 0 || req.Length > MaxRangeLen || req.Defer {
			return nil, deferral{}, nil, fmt.Errorf("%w: bad range request", ErrProtocol)
		}
		pi, serr := s.content.PathInfo(nix.PathHash(req.Path))
		if serr != nil {
			return nil, deferral{}, serr, nil
		}
		if req.Offset > pi.NarSize || uint64(req.Length) > pi.NarSize-req.Offset {
			return nil, deferral{}, fmt.Errorf("range %d+%d is outside the %d-byte NAR", req.Offset, req.Length, pi.NarSize), nil
		}
		buf.Reset()
		buf.Grow(int(req.Length)) // one allocation, not a doubling series
		if serr := s.content.WriteNAR(ctx, buf, pi.Path, int64(req.Offset), int64(req.Length)); serr != nil {
			return nil, deferral{}, serr, nil
		}
		return buf.Bytes(), deferral{}, nil, nil
	}
	return nil, deferral{}, nil, fmt.Errorf("%w: a chunk request names a chunk or a path range, not both or neither", ErrProtocol)
}

// ToWire converts a PathInfo and its chunk index to their wire form.
func ToWire(pi *nix.PathInfo, ix chunk.Index) *WireInfo { return nix.ToCBOR(pi, wireFields, ix) }

// FromWire checks and converts a WireInfo: every field well-formed, and the
// chunk index consistent with the NAR size. It says nothing about whether
// the info is true; that needs a signature or a manifest (package trust).
func FromWire(w *WireInfo) (*nix.PathInfo, chunk.Index, error) {
	pi, ix, err := w.PathInfo(wireFields)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: path info: %v", ErrProtocol, err)
	}
	return pi, ix, nil
}
