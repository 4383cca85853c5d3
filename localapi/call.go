package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Log      *slog.Logger
	// Waiting, if set, is told once that the command waits for an agent
	// that is starting or stopping.
	Waiting func(store.Holder)
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
			t.Log.Debug("running the command inside the agent", "home", t.Home, "op", o.Name)
			resp, err := o.Remote(ctx, c, req, ev)
			var te *transportError
			if !errors.As(err, &te) {
				return resp, true, err
			}
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
