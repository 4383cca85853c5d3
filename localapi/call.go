package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
)

// AgentStartWait bounds how long a command waits for a starting agent to
// answer on its control socket. Opening a large store after a reboot
// re-verifies what was not yet synced, so it is generous.
const AgentStartWait = time.Minute

// Target is where a command's operations run: a home, whose agent runs
// them when one owns the store, or this process.
type Target struct {
	Home     string
	StoreDir string
	Kind     store.Kind // the store asked for; zero: the home's
	Log      *slog.Logger
	// Waiting, if set, is told once that the command waits for an agent
	// that is starting or stopping.
	Waiting func(store.Holder)
	// LogTo, if set, receives the log lines of an operation that runs in
	// the agent, at the levels Log enables (in-process, Log has them).
	LogTo io.Writer
}

// minLevel is the lowest level log enables.
func minLevel(ctx context.Context, log *slog.Logger) (slog.Level, bool) {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if log.Enabled(ctx, l) {
			return l, true
		}
	}
	return 0, false
}

// Call runs o for t: in the agent when one owns (or is taking) the home's
// store, else in-process on a short-lived Env. An agent still starting is
// waited for; if it goes away meanwhile, o runs here instead, once. A
// command that finds the store free runs here even if an agent starts
// later.
func Call[Req, Resp any](ctx context.Context, t Target, o Op[Req, Resp], req Req, ev func(Event)) (Resp, error) {
	if t.Log == nil {
		t.Log = slog.New(slog.DiscardHandler)
	}
	forwarded := false
	remote := func() (Resp, bool, error) {
		var zero Resp
		c, err := Connect(ctx, t.Home, t.StoreDir, AgentStartWait, t.Waiting)
		if errors.Is(err, agent.ErrNoAgent) && !forwarded {
			forwarded = true
			t.Log.Debug("the agent has gone: running the command here", "home", t.Home)
			return zero, false, nil
		}
		if err == nil {
			c.backend = t.Kind.Backend
			if level, ok := minLevel(ctx, t.Log); ok && t.LogTo != nil {
				c.logTo, c.logLevel = t.LogTo, level.String()
			}
			t.Log.Debug("running the command inside the agent", "home", t.Home, "op", o.Name)
			resp, rerr := o.Remote(ctx, c, req, ev)
			var te *transportError
			if !errors.As(rerr, &te) {
				return resp, true, rerr
			}
			err = rerr // say why talking to the agent failed
		}
		return zero, true, fmt.Errorf("the store is owned by a running agent, and passing the command to it failed: %v", err)
	}
	if agent.Running(t.Home) {
		if resp, ok, err := remote(); ok {
			return resp, err
		}
	}
	for {
		e := Open(t.Home, t.StoreDir, t.Log)
		e.Kind = t.Kind
		resp, err := o.Local(ctx, e, req, ev)
		if cerr := e.Close(); cerr != nil && err == nil {
			err = cerr
		}
		var locked *store.LockedError
		if errors.As(err, &locked) && !forwarded && (locked.Holder.Role.IsAgent() || agent.Running(t.Home)) {
			// An agent owns the store, or is starting (or stopping): wait
			// for it to answer, or to let go. An agent of an older trove
			// records no role, but its socket answers.
			if resp, ok, err := remote(); ok {
				return resp, err
			}
			continue
		}
		return resp, err
	}
}

// Client calls the local API of the agent of a home.
type Client struct {
	http     *http.Client
	storeDir string
	backend  string // the store the caller asked for, if it did
	// logTo receives the operation's log lines from logLevel up.
	logTo    io.Writer
	logLevel string
}

// Connect connects to the agent that owns home's store, waiting for one
// that is starting (see agent.Connect). It wraps agent.ErrNoAgent when
// none runs.
func Connect(ctx context.Context, home, storeDir string, timeout time.Duration, waiting func(store.Holder)) (*Client, error) {
	if _, err := agent.Connect(ctx, home, timeout, waiting); err != nil {
		return nil, err
	}
	path := agent.SocketPath(home)
	return &Client{storeDir: storeDir, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}, nil
}

// errTransport marks a failure to talk to the agent, as against the
// operation's own failure.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Remote runs o in the agent c talks to; ev (may be nil) sees its events.
func (o Op[Req, Resp]) Remote(ctx context.Context, c *Client, req Req, ev func(Event)) (Resp, error) {
	var resp Resp
	body, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v1/"+o.Name, bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	hreq.Header.Set(storeDirHeader, c.storeDir)
	if c.backend != "" {
		hreq.Header.Set(backendHeader, c.backend)
	}
	if c.logTo != nil {
		hreq.Header.Set(logLevelHeader, c.logLevel)
	}
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return resp, &transportError{fmt.Errorf("talking to the agent: %w", err)}
	}
	defer hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(hresp.Body, 4096))
		if hresp.StatusCode == http.StatusNotFound || hresp.StatusCode == http.StatusMethodNotAllowed {
			// An agent of another version, left running across an upgrade.
			return resp, &transportError{fmt.Errorf("the agent does not serve the %s operation (%s): it runs another version of trove; restart it", o.Name, bytes.TrimSpace(b))}
		}
		return resp, &transportError{fmt.Errorf("agent: %s", bytes.TrimSpace(b))}
	}
	sc := bufio.NewScanner(hresp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var f frame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return resp, &transportError{fmt.Errorf("agent sent a bad frame: %w", err)}
		}
		switch {
		case f.Event != nil && f.Event.Log != "":
			if c.logTo != nil {
				io.WriteString(c.logTo, f.Event.Log)
			}
		case f.Event != nil && ev != nil:
			ev(*f.Event)
		}
		if !f.Final {
			continue
		}
		if len(f.Result) > 0 && string(f.Result) != "null" {
			if err := json.Unmarshal(f.Result, &resp); err != nil {
				return resp, &transportError{fmt.Errorf("agent sent a bad %s response: %w", o.Name, err)}
			}
		}
		if f.Error != nil {
			return resp, f.Error
		}
		return resp, nil
	}
	if err := sc.Err(); err != nil {
		return resp, &transportError{fmt.Errorf("agent connection: %w", err)}
	}
	return resp, &transportError{errors.New("the agent stopped before the command finished")}
}
