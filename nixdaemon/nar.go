package nixdaemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/trove-p2p/trove/nix"
)

// frameSize is the size of the frames AddToStoreNar sends (the daemon
// allocates one frame at a time) and of NarFromPath's copy buffer.
const frameSize = 256 << 10

// NarFromPath writes the NAR of p to w, or returns an error wrapping
// nix.ErrNotValid when p is not valid.
//
// The daemon sends the NAR raw, without a length, after its log stream.
// NarFromPath finds its end the way Nix's own client does, by walking the
// NAR's structure (bounded: token, name and target lengths, nesting
// depth) while copying it, rather than trusting the narSize of the
// database: a store path changed on disk would otherwise leave the
// connection out of step. The narSize is still asked for first (it tells
// an invalid path, which the daemon would dump anyway if its files exist)
// and checked afterwards: a mismatch is an error wrapping
// nix.ErrHashMismatch, with the connection still usable.
//
// If w fails, the rest of the NAR is read and dropped so the connection
// stays usable, and w's error is returned.
func (c *Client) NarFromPath(ctx context.Context, p nix.Path, w io.Writer) error {
	return c.do(ctx, "NarFromPath", func() error {
		pi, err := c.pathInfo(p)
		if err != nil {
			return err
		}
		c.w.u64(opNarFromPath)
		c.w.str(p.Abs(c.storeDir))
		if err := c.exchange("NarFromPath"); err != nil {
			return err
		}
		// The daemon dumps after STDERR_LAST; if dumping fails it sends
		// STDERR_ERROR instead and hangs up.
		first, err := c.r.r.Peek(8)
		if err != nil {
			return c.r.fail(eof(err))
		}
		if binary.LittleEndian.Uint64(first) == stderrError {
			c.r.u64()
			err := c.r.daemonError(c.minor, "NarFromPath")
			c.r.fail(err) // the daemon has closed the connection
			return err
		}
		nc := &narCopier{r: &c.r, w: w}
		n, err := nc.copy()
		if err != nil {
			return err
		}
		if nc.werr != nil {
			return nc.werr
		}
		if n != pi.NarSize {
			return fmt.Errorf("%s: the daemon sent a NAR of %d bytes, its database says %d: %w",
				p.Abs(c.storeDir), n, pi.NarSize, nix.ErrHashMismatch)
		}
		return nil
	})
}

// narCopier copies a NAR from the connection to w, reading exactly the
// NAR. Errors of r are the connection's; w's are kept apart in werr and
// stop the copying but not the reading.
type narCopier struct {
	r    *reader
	w    io.Writer
	werr error
	n    uint64
	buf  []byte
}

func (nc *narCopier) write(p []byte) {
	nc.n += uint64(len(p))
	if nc.werr == nil {
		_, nc.werr = nc.w.Write(p)
	}
}

// u64 reads and copies a number.
func (nc *narCopier) u64() (uint64, error) {
	n, err := nc.r.u64()
	if err == nil {
		var b [8]byte
		for i := range b {
			b[i] = byte(n >> (8 * i))
		}
		nc.write(b[:])
	}
	return n, err
}

// str reads and copies a string of at most max bytes.
func (nc *narCopier) str(max int) (string, error) {
	s, err := nc.r.str(max)
	if err != nil {
		return "", err
	}
	var b [8]byte
	n := uint64(len(s))
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
	nc.write(b[:])
	nc.write([]byte(s))
	nc.write(make([]byte, padLen(n)))
	return s, nil
}

func (nc *narCopier) expect(want ...string) error {
	for _, w := range want {
		got, err := nc.str(16)
		if err != nil {
			return err
		}
		if got != w {
			return nc.r.bad("NAR: expected %q, found %q", w, got)
		}
	}
	return nil
}

// copy copies the whole NAR and returns its size.
func (nc *narCopier) copy() (uint64, error) {
	if err := nc.expect("nix-archive-1"); err != nil {
		return 0, err
	}
	return nc.n, nc.node(0)
}

func (nc *narCopier) node(depth int) error {
	if depth > nix.MaxNARDepth {
		return nc.r.bad("NAR: nested deeper than %d levels", nix.MaxNARDepth)
	}
	if err := nc.expect("(", "type"); err != nil {
		return err
	}
	typ, err := nc.str(16)
	if err != nil {
		return err
	}
	switch typ {
	case "regular":
		tok, err := nc.str(16)
		if err != nil {
			return err
		}
		if tok == "executable" {
			if err := nc.expect("", "contents"); err != nil {
				return err
			}
		} else if tok != "contents" {
			return nc.r.bad("NAR: expected \"contents\", found %q", tok)
		}
		size, err := nc.u64()
		if err != nil {
			return err
		}
		if err := nc.contents(size); err != nil {
			return err
		}
	case "symlink":
		if err := nc.expect("target"); err != nil {
			return err
		}
		if _, err := nc.str(4095); err != nil {
			return err
		}
	case "directory":
		for {
			tok, err := nc.str(16)
			if err != nil {
				return err
			}
			if tok == ")" {
				return nil
			}
			if tok != "entry" {
				return nc.r.bad("NAR: expected \"entry\" or \")\", found %q", tok)
			}
			if err := nc.expect("(", "name"); err != nil {
				return err
			}
			if _, err := nc.str(255); err != nil {
				return err
			}
			if err := nc.expect("node"); err != nil {
				return err
			}
			if err := nc.node(depth + 1); err != nil {
				return err
			}
			if err := nc.expect(")"); err != nil {
				return err
			}
		}
	default:
		return nc.r.bad("NAR: unknown node type %q", typ)
	}
	return nc.expect(")")
}

// contents copies size bytes of file contents and their padding.
func (nc *narCopier) contents(size uint64) error {
	if nc.buf == nil {
		nc.buf = make([]byte, frameSize)
	}
	left := size + uint64(padLen(size))
	for left > 0 {
		k := min(left, uint64(len(nc.buf)))
		if _, err := io.ReadFull(nc.r.r, nc.buf[:k]); err != nil {
			return nc.r.fail(eof(err))
		}
		left -= k
		if left < uint64(padLen(size)) {
			// this chunk holds padding, which must be zero
			for _, b := range nc.buf[k-(uint64(padLen(size))-left) : k] {
				if b != 0 {
					return nc.r.bad("NAR: non-zero padding")
				}
			}
		}
		nc.write(nc.buf[:k])
	}
	return nil
}

// AddToStoreNar adds the path of info with the NAR read from nar, which
// must be exactly info.NarSize bytes long. The daemon checks the NAR
// against info.NarHash and NarSize, and the references for validity; it
// also checks the signatures unless dontCheckSigs (which only a trusted
// client may ask for). Nothing is registered when it refuses.
//
// The NAR is streamed in frames (protocol >= 1.23; before it the daemon
// asks for it piece by piece), never held whole in memory. If nar fails,
// or yields more or fewer than info.NarSize bytes (an error wrapping
// nix.ErrHashMismatch), the connection is closed without ending the NAR,
// so the daemon registers nothing, and the error is returned. Canceling ctx closes the connection, but
// AddToStoreNar returns only once a pending nar.Read has returned.
func (c *Client) AddToStoreNar(ctx context.Context, info *nix.PathInfo, nar io.Reader, dontCheckSigs bool) error {
	return c.do(ctx, "AddToStoreNar", func() error {
		if info.Path.IsZero() || info.NarSize == 0 {
			return errors.New("a PathInfo to add needs a path and a narSize")
		}
		w := &c.w
		w.u64(opAddToStoreNar)
		w.str(info.Path.Abs(c.storeDir))
		if info.Deriver.IsZero() {
			w.str("")
		} else {
			w.str(info.Deriver.Abs(c.storeDir))
		}
		w.str(info.NarHash.Hex())
		w.strs(c.abs(info.References))
		var t uint64
		if !info.RegistrationTime.IsZero() {
			t = uint64(max(info.RegistrationTime.Unix(), 0))
		}
		w.u64(t)
		w.u64(info.NarSize)
		w.bool(info.Ultimate)
		w.strs(info.Sigs)
		w.str(info.CA)
		w.bool(false) // repair
		w.bool(dontCheckSigs)
		if err := w.flush(); err != nil {
			return err
		}
		if c.frame == nil {
			c.frame = make([]byte, frameSize)
		}
		src := &narSource{r: nar, want: info.NarSize, buf: c.frame}
		var err error
		if c.minor >= 23 {
			err = c.sendFramed(src)
		} else {
			err = c.stderr("AddToStoreNar", src)
		}
		if src.err != nil {
			// Hang up before the NAR is complete: the daemon fails
			// reading it and registers nothing.
			c.fail(fmt.Errorf("AddToStoreNar: %w", src.err))
			return src.err
		}
		return err
	})
}

// sendFramed sends the NAR as frames (a length, then that many bytes; no
// padding) ended by an empty frame, while the daemon's log stream is read
// concurrently, as the daemon may log while it reads.
func (c *Client) sendFramed(src *narSource) error {
	done := make(chan error, 1)
	go func() { done <- c.stderr("AddToStoreNar", nil) }()
	for {
		select {
		case err := <-done:
			// The daemon answered before the NAR ended. Nix 2.8 never
			// does (it drains the frames first); a later daemon might
			// report an error early. Stop sending, as Nix's own client
			// does, and end the frames.
			if err == nil {
				err = c.r.bad("AddToStoreNar finished before the NAR was sent")
			}
			c.w.u64(0)
			c.w.flush()
			return err
		default:
		}
		n, err := src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			c.fail(fmt.Errorf("AddToStoreNar: %w", err)) // unblocks the reader
			<-done
			return err
		}
		c.w.u64(uint64(n))
		if c.w.err == nil {
			_, c.w.err = c.w.w.Write(src.buf[:n])
		}
		if c.w.err != nil {
			// The daemon hung up; it may have said why.
			if err := <-done; err != nil {
				return err
			}
			return c.w.err
		}
	}
	c.w.u64(0)
	if err := c.w.flush(); err != nil {
		if err := <-done; err != nil {
			return err
		}
		return err
	}
	return <-done
}

// narSource reads the NAR to send, holding it to its promised size. Its
// error is the caller's (the nar reader's or a size mismatch), never the
// connection's.
type narSource struct {
	r         io.Reader
	want, got uint64
	buf       []byte
	err       error
}

// next fills buf with the next piece of the NAR (at most len(buf) bytes),
// returning its length, io.EOF after the last, or the source's error.
func (s *narSource) next() (int, error) {
	return s.nextMax(len(s.buf))
}

func (s *narSource) nextMax(max int) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.got == s.want {
		// Exactly the promised size: the NAR must end here.
		var b [1]byte
		n, err := io.ReadFull(s.r, b[:])
		if n > 0 {
			return 0, s.fail(fmt.Errorf("%w: the NAR is longer than its narSize %d", nix.ErrHashMismatch, s.want))
		}
		if err != io.EOF {
			return 0, s.fail(err)
		}
		return 0, io.EOF
	}
	k := int(min(uint64(max), s.want-s.got))
	n, err := io.ReadFull(s.r, s.buf[:k])
	s.got += uint64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return 0, s.fail(fmt.Errorf("%w: the NAR ended after %d bytes, before its narSize %d", nix.ErrHashMismatch, s.got, s.want))
	case err != nil:
		return 0, s.fail(fmt.Errorf("reading the NAR: %w", err))
	}
	return n, nil
}

func (s *narSource) fail(err error) error {
	s.err = err
	return err
}

// tunnel answers the daemon's STDERR_READ of protocols before 1.23: a
// string of at most n bytes of the NAR (an empty one at its end).
func (s *narSource) tunnel(w *writer, n uint64) error {
	k, err := s.nextMax(int(min(n, uint64(len(s.buf)))))
	if err != nil && err != io.EOF {
		return err
	}
	w.str(string(s.buf[:k]))
	return w.flush()
}
