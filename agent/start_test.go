package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/store"
)

func testConfig(home string, log *lockedBuffer) Config {
	return Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.NewTextHandler(log, nil))}
}

// holdStore opens home's store as role and returns a func that closes it.
func holdStore(t *testing.T, home string, role store.Role) (release func()) {
	t.Helper()
	s, err := store.Open(home, store.Options{Role: role})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { s.Close() }) }
	t.Cleanup(release)
	return release
}

// An agent that finds a one-shot command holding the store (a `trove
// status` started beside it) waits for the command to end, saying so once.
func TestStartWaitsForACommand(t *testing.T) {
	home := t.TempDir()
	release := holdStore(t, home, store.RoleCommand)
	time.AfterFunc(300*time.Millisecond, release)

	var log lockedBuffer
	began := time.Now()
	a, err := Start(context.Background(), testConfig(home, &log))
	if err != nil {
		t.Fatalf("Start while a command holds the store: %v", err)
	}
	defer a.Close()
	if waited := time.Since(began); waited < 300*time.Millisecond {
		t.Errorf("Start returned after %v, before the command let go", waited)
	}
	if n := strings.Count(log.String(), "waiting for another process to let go of the store"); n != 1 {
		t.Errorf("the agent said it waits %d times; want once. Log:\n%s", n, log.String())
	}
	if h, held, _ := store.LockHolder(home); !held || h.Role != store.RoleAgent {
		t.Errorf("a started agent's lock record: %+v, held %v", h, held)
	}
	if !Running(home) {
		t.Error("Running is false with an agent started")
	}
}

// A second agent in the same home fails at once, whether the first one
// serves its socket yet or not.
func TestSecondAgentFailsAtOnce(t *testing.T) {
	for _, role := range []store.Role{store.RoleAgentStarting, store.RoleAgent} {
		home := t.TempDir()
		holdStore(t, home, role)
		var log lockedBuffer
		began := time.Now()
		a, err := Start(context.Background(), testConfig(home, &log))
		if err == nil {
			a.Close()
			t.Fatalf("a second agent started beside one that is %s", role)
		}
		if !strings.Contains(err.Error(), "another agent (pid") || time.Since(began) > 5*time.Second {
			t.Errorf("second agent beside one that is %s: after %v: %v", role, time.Since(began), err)
		}
	}

	home := t.TempDir()
	var log lockedBuffer
	a, err := Start(context.Background(), testConfig(home, &log))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if b, err := Start(context.Background(), testConfig(home, &log)); err == nil || !strings.Contains(err.Error(), "another agent") {
		if b != nil {
			b.Close()
		}
		t.Fatalf("a second agent beside a running one: %v", err)
	}
}

// Stopping an agent that waits for the store (Ctrl-C) ends the wait.
func TestStartWaitingForTheStoreEndsWithItsContext(t *testing.T) {
	home := t.TempDir()
	holdStore(t, home, store.RoleCommand)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var log lockedBuffer
	_, err := Start(ctx, testConfig(home, &log))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start cancelled while waiting: %v", err)
	}
}

func TestRunningAndConnect(t *testing.T) {
	home := t.TempDir()
	if Running(home) {
		t.Fatal("Running in an empty home")
	}
	ctx := context.Background()
	if _, err := Connect(ctx, home, time.Minute, nil); !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), home) {
		t.Fatalf("Connect with no agent: %v", err)
	}

	// A command holds the store: no agent runs.
	release := holdStore(t, home, store.RoleCommand)
	if Running(home) {
		t.Error("Running while a command holds the store")
	}
	if _, err := Connect(ctx, home, time.Minute, nil); !errors.Is(err, ErrNoAgent) {
		t.Errorf("Connect while a command holds the store: %v", err)
	}
	release()

	// An agent that has the store but no socket yet is waited for, up
	// to the timeout.
	release = holdStore(t, home, store.RoleAgentStarting)
	if !Running(home) {
		t.Error("Running is false while an agent starts")
	}
	var told []store.Holder
	if _, err := Connect(ctx, home, 100*time.Millisecond, func(h store.Holder) { told = append(told, h) }); err == nil || !strings.Contains(err.Error(), "has not answered") {
		t.Errorf("Connect to an agent that never answers: %v", err)
	}
	if len(told) != 1 || told[0].Role != store.RoleAgentStarting {
		t.Errorf("Connect told of its wait %v; want once, of the starting agent", told)
	}
	time.AfterFunc(200*time.Millisecond, func() {
		ln, err := net.Listen("unix", SocketPath(home))
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { ln.Close() })
	})
	if _, err := Connect(ctx, home, time.Minute, nil); err != nil {
		t.Errorf("Connect to an agent that answers after 200ms: %v", err)
	}
	release()
}

// An agent that is stopping is waited for until it lets go; then no agent runs.
func TestConnectWaitsForAStoppingAgentToGo(t *testing.T) {
	home := t.TempDir()
	release := holdStore(t, home, store.RoleAgentStopping)
	if Running(home) {
		t.Error("Running is true while the agent stops")
	}
	time.AfterFunc(200*time.Millisecond, release)
	var told []store.Holder
	began := time.Now()
	_, err := Connect(context.Background(), home, time.Minute, func(h store.Holder) { told = append(told, h) })
	if !errors.Is(err, ErrNoAgent) || time.Since(began) < 200*time.Millisecond {
		t.Errorf("Connect while an agent stops: after %v: %v", time.Since(began), err)
	}
	if len(told) != 1 || told[0].Role != store.RoleAgentStopping {
		t.Errorf("Connect told of its wait %v; want once, of the stopping agent", told)
	}
}
