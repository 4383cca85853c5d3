package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
)

// beTroveEnv makes the test binary, started again by the tests below, run
// as the trove command itself (TestMain calls main), so the race between
// an agent starting and commands beside it is one between real processes.
const beTroveEnv = "TROVE_TEST_BE_TROVE"

// agentStartsEnv sets how many raced starts TestAgentStartRacedByCommands
// makes: by default 50 (issue 11's figure; ~10 s), or 10 under -race or
// -short, where 50 take minutes.
const agentStartsEnv = "TROVE_TEST_AGENT_STARTS"

// troveProcess is trove (the test binary acting as it) started in home.
func troveProcess(ctx context.Context, home string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, os.Args[0], append([]string{"--home", home}, args...)...)
	c.Env = append(os.Environ(), beTroveEnv+"=1")
	return c
}

// raced is what one command started beside an agent did.
type raced struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r raced) String() string {
	return fmt.Sprintf("trove %s: exit %d, stdout %q, stderr %q", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// saidNoAgent says whether a command told the user, clearly, that no
// agent runs in the home.
func (r raced) saidNoAgent() bool {
	return r.code == 1 && strings.Contains(r.stderr, "no trove agent is running")
}

// TestAgentStartRacedByCommands starts `trove agent` again and again in one
// home, each time with `trove status`, `trove peers` and `trove path-info`
// started beside it (at once, or a few milliseconds later), as `trove agent
// & trove status` in a script does. The agent must never die of it, and
// each command must either go through the agent or say that none runs
// (path-info, which needs no agent, must simply work).
func TestAgentStartRacedByCommands(t *testing.T) {
	starts := 50
	if raceDetector || testing.Short() {
		starts = 10
	}
	if s := os.Getenv(agentStartsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", agentStartsEnv, s)
		}
		starts = n
	}
	home := newHome(t)
	path := mustAdd(t, home, "hello.txt", "hello\n")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var sum raceSummary
	began := time.Now()
	for i := range starts {
		raceOneStart(t, ctx, home, path, time.Duration(i%5)*10*time.Millisecond, &sum)
	}
	t.Logf("%d raced agent starts in %v: %d agent deaths, %d commands that neither went through the agent nor said none runs",
		starts, time.Since(began).Round(time.Millisecond), sum.deaths, sum.wrong)
	t.Logf("windows hit: %d agents waited for a command to let go of the store, %d commands waited for a starting agent, %d said no agent runs",
		sum.agentWaited, sum.commandWaited, sum.noAgent)
	if sum.deaths > 0 || sum.wrong > 0 {
		t.Errorf("agent deaths: %d of %d starts; commands that went wrong: %d (want 0 and 0)", sum.deaths, starts, sum.wrong)
	}
}

// raceSummary counts what the raced starts did.
type raceSummary struct {
	deaths, wrong                       int // what must not happen
	agentWaited, commandWaited, noAgent int // which side of the race each came out on
}

// raceOneStart starts an agent, starts the three commands after delay,
// waits for all of them, stops the agent, and adds up what happened.
func raceOneStart(t *testing.T, ctx context.Context, home, path string, delay time.Duration, sum *raceSummary) {
	t.Helper()
	ag := troveProcess(ctx, home, "agent", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false")
	var agentErr bytes.Buffer
	ag.Stderr = &agentErr
	mustDo(t, ag.Start())
	exited := make(chan struct{})
	go func() { ag.Wait(); close(exited) }()

	time.Sleep(delay)
	cmds := [][]string{{"status"}, {"peers"}, {"path-info", "--all"}}
	results := make([]raced, len(cmds))
	var wg sync.WaitGroup
	for j, args := range cmds {
		wg.Go(func() {
			c := troveProcess(ctx, home, args...)
			var stdout, stderr bytes.Buffer
			c.Stdout, c.Stderr = &stdout, &stderr
			err := c.Run()
			code := c.ProcessState.ExitCode()
			if err != nil && code <= 0 {
				t.Errorf("trove %s: %v", strings.Join(args, " "), err)
			}
			results[j] = raced{args: args, stdout: stdout.String(), stderr: stderr.String(), code: code}
		})
	}
	wg.Wait()

	// The agent may still be starting: wait until it answers, or exits.
	died := false
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := agent.Dial(home); err == nil {
			break
		}
		select {
		case <-exited:
			died = true
		case <-time.After(20 * time.Millisecond):
		}
		if died || time.Now().After(deadline) {
			break
		}
	}
	if died {
		sum.deaths++
		t.Logf("the agent died: %s; its log:\n%s", ag.ProcessState, agentErr.String())
	} else {
		ag.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			ag.Process.Kill()
			<-exited
			t.Errorf("the agent did not stop within 30 s of SIGTERM")
		}
		if code := ag.ProcessState.ExitCode(); code != 0 {
			t.Errorf("the agent stopped with exit status %d; its log:\n%s", code, agentErr.String())
		}
	}
	// The agent has exited: its log is complete.
	if strings.Contains(agentErr.String(), "waiting for another process") {
		sum.agentWaited++
	}

	for _, r := range results {
		ok := false
		switch r.args[0] {
		case "status":
			ok = r.code == 0 && strings.Contains(r.stdout, "peer ID:") || r.saidNoAgent()
		case "peers":
			ok = r.code == 0 || r.saidNoAgent()
		case "path-info":
			ok = r.code == 0 && r.stdout == path+"\n"
		}
		if !ok {
			sum.wrong++
			t.Logf("went wrong: %s", r)
		}
		if strings.Contains(r.stderr, "waiting for the agent") {
			sum.commandWaited++
		}
		if r.saidNoAgent() {
			sum.noAgent++
		}
	}
}
