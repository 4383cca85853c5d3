package main

import (
	"context"
	"fmt"
	"io"

	"github.com/trove-p2p/trove/agent"
)

// agentRunning reports whether an agent listens in this home.
func (a *app) agentRunning() bool {
	home, err := a.homeDir()
	if err != nil {
		return false
	}
	c, err := agent.Dial(home)
	return err == nil && c != nil
}

// forward runs this command line inside the running agent and relays its
// output; the exit status is the agent-side command's.
func (a *app) forward(ctx context.Context) int {
	home, err := a.homeDir()
	if err == nil {
		var c *agent.Client
		if c, err = agent.Dial(home); err == nil {
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
