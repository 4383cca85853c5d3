package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
)

// agentRunning reports whether an agent owns this home, or is starting
// and will; the command then goes through it (errForward).
func (a *app) agentRunning() bool {
	home, err := a.homeDir()
	return err == nil && agent.Running(home)
}

// agentStartWait bounds how long a command waits for a starting agent to
// answer on its control socket. Opening a large store after a reboot
// re-verifies what was not yet synced, so it is generous.
const agentStartWait = time.Minute

// forward runs this command line inside the agent that owns the home and
// relays its output; the exit status is the agent-side command's. An
// agent still starting is waited for. If the agent went away meanwhile,
// the command runs here instead, once.
func (a *app) forward(ctx context.Context) int {
	home, err := a.homeDir()
	if err == nil {
		var c *agent.Client
		c, err = agent.Connect(ctx, home, agentStartWait, func(h store.Holder) {
			what := "start"
			if h.Role == store.RoleAgentStopping {
				what = "stop"
			}
			fmt.Fprintf(a.stderr, "trove: waiting for the agent (pid %d) to %s…\n", h.PID, what)
		})
		if errors.Is(err, agent.ErrNoAgent) && !a.forwarded {
			a.forwarded = true
			a.log.Debug("the agent has gone: running the command here", "home", home)
			return run(ctx, a, a.args)
		}
		if err == nil {
			a.log.Debug("running the command inside the agent", "home", home)
			var code int
			code, err = c.Run(ctx, agent.RunRequest{Args: a.args, Cwd: a.cwd, StderrTTY: isTerminal(a.stderr)}, a.stdout, a.stderr)
			if err == nil {
				return code
			}
		}
	}
	fmt.Fprintf(a.stderr, "trove: the store is owned by a running agent, and passing the command to it failed: %v\n", err)
	return 1
}

// agentRunner is the agent's Runner: it runs a command line with the
// agent's store and node, as if typed in the caller's directory.
func agentRunner(getenv func(string) string) agent.Runner {
	return func(ctx context.Context, ag *agent.Agent, req agent.RunRequest, stdout, stderr io.Writer) int {
		a := newApp(emptyReader{}, stdout, stderr, getenv)
		a.cwd, a.agent = req.Cwd, ag
		tty := req.StderrTTY
		a.stderrTTY = &tty
		return run(ctx, a, req.Args)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }
