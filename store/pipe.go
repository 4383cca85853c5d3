package store

import (
	"io"
	"sync"
)

// bufPipe is an in-memory pipe with a buffer, so the writer can run ahead of
// the reader instead of handing over each write synchronously as io.Pipe
// does. It is what lets the stages of an ingest (read, parse and hash,
// chunk) run on different cores.
type bufPipe struct {
	mu       sync.Mutex
	cond     sync.Cond
	buf      []byte // ring of len(buf) bytes
	r, n     int    // read position, bytes buffered
	werr     error  // set by CloseWrite: what the reader gets after draining
	rerr     error  // set by CloseRead: what the writer gets
	closedWr bool
}

func newBufPipe(size int) *bufPipe {
	p := &bufPipe{buf: make([]byte, size)}
	p.cond.L = &p.mu
	return p
}

// pipeSize is the buffer of the pipes between ingest stages.
const pipeSize = 8 << 20

// The pipes' buffers are recycled: a sync stages one NAR after another,
// and allocating (and zeroing) 8 MiB afresh for each costs more than
// parsing a small NAR.
var pipeBufs = sync.Pool{New: func() any { return new([pipeSize]byte) }}

// newPooledPipe is a bufPipe of pipeSize bytes whose buffer goes back to a
// pool with recycle.
func newPooledPipe() *bufPipe {
	p := &bufPipe{buf: pipeBufs.Get().(*[pipeSize]byte)[:]}
	p.cond.L = &p.mu
	return p
}

// recycle returns the buffer of a pooled pipe; the caller guarantees that
// neither end will touch the pipe again.
func (p *bufPipe) recycle() {
	pipeBufs.Put((*[pipeSize]byte)(p.buf))
	p.buf = nil
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	written := 0
	for len(b) > 0 {
		for p.n == len(p.buf) && p.rerr == nil {
			p.cond.Wait()
		}
		if p.rerr != nil {
			return written, p.rerr
		}
		w := (p.r + p.n) % len(p.buf)
		end := len(p.buf)
		if w < p.r {
			end = p.r
		}
		m := copy(p.buf[w:end], b)
		p.n += m
		b = b[m:]
		written += m
		p.cond.Broadcast()
	}
	return written, nil
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.n == 0 && !p.closedWr && p.rerr == nil {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	if p.n == 0 {
		return 0, p.werr
	}
	end := min(p.r+p.n, len(p.buf))
	m := copy(b, p.buf[p.r:end])
	p.r = (p.r + m) % len(p.buf)
	p.n -= m
	p.cond.Broadcast()
	return m, nil
}

// CloseWrite ends the stream: the reader drains what is buffered, then gets
// err (io.EOF if nil).
func (p *bufPipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	if !p.closedWr {
		p.closedWr, p.werr = true, err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// CloseRead tells the writer nobody is reading: its writes fail with err.
func (p *bufPipe) CloseRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.mu.Lock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}
