package nixdaemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// DefaultSocket is where nix-daemon listens.
const DefaultSocket = "/nix/var/nix/daemon-socket/socket"

// Options configure a Client.
type Options struct {
	// StoreDir is the daemon's logical store directory, nix.DefaultStoreDir
	// when empty.
	StoreDir string
	// Log receives the daemon's log lines at debug level; nil drops them.
	Log *slog.Logger

	// version is the protocol version announced, protocolVersion when 0;
	// tests set it lower to exercise older layouts.
	version int
}

// Client is one connection to a Nix daemon. Its methods are safe for
// concurrent use: they take turns on the connection.
//
// A context canceled while its operation is in flight closes the
// connection (the operation returns ctx.Err()), as does any reply that
// breaks the protocol; the Client is then unusable.
type Client struct {
	storeDir      string
	log           *slog.Logger
	minor         int
	daemonVersion string

	turn  chan struct{} // held by the operation using the connection
	r     reader
	w     writer
	frame []byte // AddToStoreNar's frame buffer, allocated once

	conn      io.Closer
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	closed error // why the connection was closed; nil while usable
}

// Dial connects to the daemon listening on socket (DefaultSocket when
// empty) and performs the handshake.
func Dial(ctx context.Context, socket string, o Options) (*Client, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("nixdaemon: %w", err)
	}
	c, err := newClient(ctx, conn, conn, conn, o)
	if err != nil && hungUp(err) {
		return nil, fmt.Errorf("nixdaemon: %s: %w (%v)", socket, ErrHungUp, err)
	}
	return c, err
}

// ErrHungUp is wrapped by Dial's error when the daemon accepted the
// connection but closed it without answering the handshake, as nix-daemon
// does to a user its allowed-users (and trusted-users) do not list.
var ErrHungUp = errors.New("the Nix daemon hung up during the handshake")

// hungUp reports whether err says the peer closed the connection.
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// Start runs `nix-daemon --stdio` (with `--store storeURI` unless storeURI
// is empty) as a child process and speaks to it over its stdin and stdout.
// Its stderr goes to o.Log. Close ends the child and waits for it; ctx
// bounds only the handshake.
func Start(ctx context.Context, storeURI string, o Options) (*Client, error) {
	args := []string{"--stdio"}
	if storeURI != "" {
		args = append(args, "--store", storeURI)
	}
	cmd := exec.Command("nix-daemon", args...)
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	if o.Log != nil {
		cmd.Stderr = &logWriter{log: o.Log}
	}
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("nixdaemon: %w", err)
	}
	return newClient(ctx, outR, inW, &child{cmd: cmd, in: inW, out: outR}, o)
}

// child is the transport of Start: closing it closes the pipes, which
// makes the daemon exit, and waits for it (killing it after a while).
type child struct {
	cmd     *exec.Cmd
	in, out *os.File
}

func (c *child) Close() error {
	c.in.Close()
	c.out.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	return nil // the daemon's exit status says nothing more than its replies did
}

// logWriter logs the lines written to it (the child daemon's stderr).
type logWriter struct {
	log  *slog.Logger
	mu   sync.Mutex
	line []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		w.log.Debug("nix-daemon stderr", "line", stripANSI(string(w.line[:i])))
		w.line = w.line[i+1:]
	}
	if len(w.line) > maxMsg {
		w.line = w.line[:0]
	}
	return len(p), nil
}

// newClient performs the handshake on a connection.
func newClient(ctx context.Context, r io.Reader, w io.Writer, conn io.Closer, o Options) (*Client, error) {
	c := &Client{
		storeDir: o.StoreDir,
		log:      o.Log,
		turn:     make(chan struct{}, 1),
		r:        reader{r: bufio.NewReaderSize(r, 64<<10)},
		w:        writer{w: bufio.NewWriterSize(w, 64<<10)},
		conn:     conn,
	}
	if c.storeDir == "" {
		c.storeDir = nix.DefaultStoreDir
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	version := o.version
	if version == 0 {
		version = protocolVersion
	}
	err := c.do(ctx, "handshake", func() error { return c.handshake(version) })
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake(version int) error {
	c.w.u64(workerMagic1)
	if err := c.w.flush(); err != nil {
		return err
	}
	magic, err := c.r.u64()
	if err != nil {
		return err
	}
	if magic != workerMagic2 {
		return c.r.bad("not a Nix daemon (protocol mismatch: magic %#x)", magic)
	}
	dv, err := c.r.u64()
	if err != nil {
		return err
	}
	if dv>>8 != 1 {
		return c.r.fail(fmt.Errorf("the Nix daemon speaks protocol %d.%d; only 1.x is supported", dv>>8, dv&0xff))
	}
	c.minor = min(int(dv&0xff), version&0xff)
	if c.minor < minMinor {
		return c.r.fail(fmt.Errorf("the Nix daemon speaks protocol 1.%d; nixdaemon needs 1.%d (Nix 2.0) or later", dv&0xff, minMinor))
	}
	c.w.u64(uint64(version))
	c.w.u64(0) // no CPU affinity (protocol >= 1.14)
	c.w.u64(0) // reserveSpace, obsolete (>= 1.11)
	if err := c.w.flush(); err != nil {
		return err
	}
	if c.minor >= 33 {
		if c.daemonVersion, err = c.r.str(maxVersion); err != nil {
			return err
		}
	}
	return c.stderr("handshake", nil)
}

// Version returns the protocol version in use: the lower of the daemon's
// and the client's (1.34).
func (c *Client) Version() (major, minor int) { return 1, c.minor }

// DaemonVersion returns the daemon's Nix version, "" if it did not say
// (protocol < 1.33).
func (c *Client) DaemonVersion() string { return c.daemonVersion }

// Close closes the connection (and ends the daemon of Start). Operations
// in flight fail.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	return c.closeErr
}

// fail closes the connection for reason, once.
func (c *Client) fail(reason error) {
	c.mu.Lock()
	if c.closed == nil {
		c.closed = reason
	}
	c.mu.Unlock()
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
}

func (c *Client) usable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed == nil:
		return nil
	case errors.Is(c.closed, ErrClosed):
		return c.closed
	}
	return fmt.Errorf("%w after an earlier failure: %v", ErrClosed, c.closed)
}

// do runs op's exchange fn with the connection to itself. A canceled ctx
// closes the connection; so does any error of the reader or writer, which
// leaves the connection out of step.
func (c *Client) do(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.turn }()
	if err := c.usable(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.fail(fmt.Errorf("%s: %w", op, context.Cause(ctx))) })
	err := fn()
	if !stop() {
		return ctx.Err()
	}
	if c.r.err != nil || c.w.err != nil {
		cause := c.r.err
		if cause == nil {
			cause = c.w.err
		}
		c.fail(fmt.Errorf("%s: %w", op, cause))
	}
	var de *DaemonError
	if err == nil || errors.As(err, &de) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("nixdaemon: %s: %w", op, err)
}

// stderr reads the daemon's log stream that precedes every reply, up to
// STDERR_LAST (nil) or STDERR_ERROR (a *DaemonError). src, when not nil,
// answers STDERR_READ: the NAR of AddToStoreNar before protocol 1.23.
func (c *Client) stderr(op string, src *narSource) error {
	r := &c.r
	for {
		msg, err := r.u64()
		if err != nil {
			return err
		}
		switch msg {
		case stderrLast:
			return nil
		case stderrError:
			return r.daemonError(c.minor, op)
		case stderrNext:
			s, err := r.str(maxMsg)
			if err != nil {
				return err
			}
			c.log.Debug(strings.TrimRight(stripANSI(s), "\n"), "source", "nix-daemon", "op", op)
		case stderrStartActivity:
			var id, lvl, typ, parent uint64
			var s string
			var fs []any
			if id, err = r.u64(); err == nil {
				if lvl, err = r.u64(); err == nil {
					if typ, err = r.u64(); err == nil {
						if s, err = r.str(maxMsg); err == nil {
							if fs, err = r.skipFields(); err == nil {
								parent, err = r.u64()
							}
						}
					}
				}
			}
			if err != nil {
				return err
			}
			if s != "" {
				c.log.Debug(stripANSI(s), "source", "nix-daemon", "op", op, "activity", id,
					"level", lvl, "type", typ, "fields", fs, "parent", parent)
			}
		case stderrStopActivity:
			if _, err := r.u64(); err != nil {
				return err
			}
		case stderrResult:
			if _, err := r.u64(); err != nil { // activity
				return err
			}
			if _, err := r.u64(); err != nil { // result type
				return err
			}
			if _, err := r.skipFields(); err != nil {
				return err
			}
		case stderrRead:
			n, err := r.u64()
			if err != nil {
				return err
			}
			if src == nil {
				return r.bad("STDERR_READ during %s", op)
			}
			if err := src.tunnel(&c.w, n); err != nil {
				return err
			}
		default:
			// STDERR_WRITE included: none of our operations sends to a sink.
			return r.bad("unexpected message %#x in the log stream of %s", msg, op)
		}
	}
}
