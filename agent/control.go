package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

func (a *Agent) serveControl() error {
	path := SocketPath(a.cfg.Home)
	// A socket left by an agent that died: nothing listens, so remove it.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("another agent is already listening on %s", path)
	}
	os.Remove(path)
	old := syscall.Umask(0o177) // the socket is created 0600
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	a.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.handleStatus)
	mux.HandleFunc("GET /v1/peers", a.handlePeers)
	if a.cfg.API != nil {
		mux.Handle("POST /v1/", a.cfg.API(a))
	}
	a.srv = &http.Server{Handler: mux}
	go a.srv.Serve(ln)
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.Status(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, st)
}

func (a *Agent) handlePeers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.Node.Peers())
}

// Client talks to a running agent's control API.
type Client struct {
	http *http.Client
}

// ErrNoAgent means no agent is running in a home; the errors that say so
// for a given home (NotRunning) wrap it.
var ErrNoAgent = errors.New("no trove agent is running")

// NotRunning is the error saying that no agent runs in home, and what to do.
func NotRunning(home string) error {
	return fmt.Errorf("%w in %s (start one with `trove agent`)", ErrNoAgent, home)
}

// Dial connects to the agent of home, or returns an error wrapping
// ErrNoAgent if none answers on the control socket now.
func Dial(home string) (*Client, error) {
	path := SocketPath(home)
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, NotRunning(home)
	}
	c.Close()
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}, nil
}

// Running reports whether an agent owns home, or is starting and will:
// its control socket answers, or the store's lock is held by an agent that
// has not stopped. It does not open the store.
func Running(home string) bool {
	if _, err := Dial(home); err == nil {
		return true
	}
	h, held, err := store.LockHolder(home)
	return err == nil && held && (h.Role == store.RoleAgentStarting || h.Role == store.RoleAgent)
}

// Connect connects to the agent that owns home's store. An agent that
// holds the store but does not answer yet (it is starting: opening the
// store and the node takes a moment) is waited for, up to timeout;
// waiting, if set, is called once first with that agent. An agent that is
// stopping is waited for until it has let go, and Connect then says no
// agent runs, as it does when none holds the store.
func Connect(ctx context.Context, home string, timeout time.Duration, waiting func(store.Holder)) (*Client, error) {
	deadline := time.Now().Add(timeout)
	told := false
	for {
		if c, err := Dial(home); err == nil {
			return c, nil
		}
		h, held, err := store.LockHolder(home)
		if err != nil {
			return nil, err
		}
		if !held || !h.Role.IsAgent() {
			return nil, NotRunning(home)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the agent (%v) has not answered on %s for %v: see its log, or stop it and start it again", h, SocketPath(home), timeout)
		}
		if !told && waiting != nil {
			waiting(h)
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the agent (pid %d): %w", h.PID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("talking to the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent: %s", b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Status asks the agent for its status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.get(ctx, "/v1/status", &st)
}

// Peers asks the agent for its peers.
func (c *Client) Peers(ctx context.Context) ([]p2p.PeerStatus, error) {
	var ps []p2p.PeerStatus
	return ps, c.get(ctx, "/v1/peers", &ps)
}
