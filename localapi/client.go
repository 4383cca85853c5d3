package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
)

// Client calls the local API of the agent of a home.
type Client struct {
	http     *http.Client
	storeDir string
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
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return resp, &transportError{fmt.Errorf("talking to the agent: %w", err)}
	}
	defer hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(hresp.Body, 4096))
		return resp, &transportError{fmt.Errorf("agent: %s", bytes.TrimSpace(b))}
	}
	sc := bufio.NewScanner(hresp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var f frame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return resp, &transportError{fmt.Errorf("agent sent a bad frame: %w", err)}
		}
		if f.Event != nil && ev != nil {
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
