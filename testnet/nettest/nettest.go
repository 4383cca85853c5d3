// Package nettest adapts testnet's LANs to tests: StartLAN takes a
// testing.TB, skips (or fails, with TROVE_REQUIRE_NETNS=1) where namespaces
// cannot run, closes the LAN through t.Cleanup, shows the agents' logs when
// the test fails, and turns every failed scenario step into a test failure.
// Only tests import it, so the trove binary does not link package testing.
package nettest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/testnet"
)

// Main runs the tests of a package that uses testnet and then removes what
// testnet built for them. Call it from TestMain:
//
//	func TestMain(m *testing.M) { nettest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	testnet.RemoveBuild()
	os.Exit(code)
}

// LAN is a testnet.LAN whose scenario steps fail the test instead of
// returning an error. The embedded LAN's accessors (N, ID, Home, Log,
// Started, Ready, Run) are used as they are.
type LAN struct {
	*testnet.LAN
	t testnet.TB
}

// StartLAN starts a testnet.LAN of n agents in t's temp directory (see
// testnet.NewLAN) and closes it when the test ends, printing the tail of
// each agent's log first if the test failed. It skips the test unless
// running as root with iproute2 (ip) installed, or fails it instead when
// TROVE_REQUIRE_NETNS=1.
func StartLAN(t testing.TB, n int, opts ...testnet.Option) *LAN {
	t.Helper()
	return startLAN(t, n, opts...)
}

// startLAN takes the part of testing.TB it uses, so that a test of this
// package can stand in for a test that fails.
func startLAN(t testnet.TB, n int, opts ...testnet.Option) *LAN {
	t.Helper()
	l, err := testnet.NewLAN(t.TempDir(), n, opts...)
	if err != nil {
		var un *testnet.UnavailableError
		if errors.As(err, &un) {
			if os.Getenv(testnet.RequireEnv) != "1" {
				t.Skipf("%v", err)
			}
			t.Fatalf("%v, and %s=1", err, testnet.RequireEnv)
		}
		t.Fatalf("%v", err)
	}
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s", l.LogTails())
		}
		if err := l.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return &LAN{LAN: l, t: t}
}

func (l *LAN) check(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatalf("%v", err)
	}
}

// Trove runs a trove command line in agent i's home and returns its
// standard output; the test fails if the command does.
func (l *LAN) Trove(i int, args ...string) string {
	l.t.Helper()
	out, err := l.LAN.Trove(i, args...)
	l.check(err)
	return out
}

// Status is agent i's status, as `trove status --json` prints it.
func (l *LAN) Status(i int) *agent.Status {
	l.t.Helper()
	st, err := l.LAN.Status(i)
	l.check(err)
	return st
}

// WaitConnected waits until every running agent has exactly k connected
// peers and returns how long it waited; the test fails after 30 s.
func (l *LAN) WaitConnected(k int) time.Duration {
	l.t.Helper()
	d, err := l.LAN.WaitConnected(k)
	l.check(err)
	return d
}

// WaitPeers waits until agent i has exactly k connected peers.
func (l *LAN) WaitPeers(i, k int) time.Duration {
	l.t.Helper()
	d, err := l.LAN.WaitPeers(i, k)
	l.check(err)
	return d
}

// Kill kills agent i with SIGKILL, as a crash or power loss would.
func (l *LAN) Kill(i int) { l.t.Helper(); l.check(l.LAN.Kill(i)) }

// Stop stops agent i cleanly; if it does not stop in time it is killed and
// the reason logged.
func (l *LAN) Stop(i int) {
	l.t.Helper()
	if err := l.LAN.Stop(i); err != nil {
		l.t.Logf("%v", err)
	}
}

// Restart stops agent i if it runs and starts it again (testnet.LAN.Restart).
// As with Stop, an agent that had to be killed is logged, not a failure.
func (l *LAN) Restart(i int) {
	l.t.Helper()
	l.Stop(i)
	l.check(l.LAN.Restart(i))
}

// Partition cuts agents i and j off from each other (testnet.LAN.Partition).
func (l *LAN) Partition(i, j int) { l.t.Helper(); l.check(l.LAN.Partition(i, j)) }

// Heal undoes Partition(i, j).
func (l *LAN) Heal(i, j int) { l.t.Helper(); l.check(l.LAN.Heal(i, j)) }

// Shape shapes agent i's link (testnet.LAN.Shape).
func (l *LAN) Shape(i int, link testnet.Link) { l.t.Helper(); l.check(l.LAN.Shape(i, link)) }
