package main

import (
	"context"
	"fmt"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/store"
)

// agentRunning reports whether an agent owns this home, or is starting
// and will.
func (a *app) agentRunning() bool {
	home, err := a.homeDir()
	return err == nil && agent.Running(home)
}

// call runs an operation of the local API: in the agent that owns the
// home, or here (localapi.Call decides). A request the operation calls
// wrong is a usage error.
func call[Req, Resp any](ctx context.Context, a *app, o localapi.Op[Req, Resp], req Req, ev func(localapi.Event)) (Resp, error) {
	home, err := a.homeDir()
	if err != nil {
		var zero Resp
		return zero, err
	}
	t := localapi.Target{Home: home, StoreDir: a.storeDir, Log: a.log, Waiting: func(h store.Holder) {
		what := "start"
		if h.Role == store.RoleAgentStopping {
			what = "stop"
		}
		fmt.Fprintf(a.stderr, "trove: waiting for the agent (pid %d) to %s…\n", h.PID, what)
	}}
	resp, err := localapi.Call(ctx, t, o, req, ev)
	if localapi.IsUsage(err) {
		return resp, usageError{err}
	}
	return resp, err
}

// events shows the events of an operation as trove always has: imported
// paths (when progress is shown), unreachable peers, resolved
// configurations, waits, and output for the terminal.
type events struct {
	a        *app
	imported bool // show imported paths
	sync     *syncProgress
	waitName string // the profile an activation waits for
}

func (e events) show(ev localapi.Event) {
	a := e.a
	switch {
	case ev.Progress != nil && e.sync != nil:
		e.sync.update(*ev.Progress)
	case ev.Imported != nil && e.imported:
		fmt.Fprintf(a.stderr, "imported %s (%s)\n", ev.Imported.Path, humanBytes(ev.Imported.NarSize))
	case ev.Unreachable != nil:
		fmt.Fprintf(a.stderr, "trove: cannot reach %s: %v\n", ev.Unreachable.Peer, ev.Unreachable.Error)
	case ev.Resolved != nil:
		r := ev.Resolved
		fmt.Fprintf(a.stderr, "%s: generation %d, %d paths, published by %s\n", r.Name, r.Generation, r.Paths, r.Publisher)
	case ev.WaitingFor != "":
		fmt.Fprintf(a.stderr, "waiting for another activation of %s to finish (%s)…\n", e.waitName, ev.WaitingFor)
	case ev.Output != nil && ev.Output.Stream == 1:
		a.stdout.Write(ev.Output.Data)
	case ev.Output != nil:
		a.stderr.Write(ev.Output.Data)
	}
}
