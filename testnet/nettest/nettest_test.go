package nettest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/testnet"
)

func TestMain(m *testing.M) { Main(m) }

// failingT stands in for a test that fails in the middle of a scenario:
// it keeps cleanups and logs instead of handing them to the real test.
type failingT struct {
	real     *testing.T
	mu       sync.Mutex
	failed   bool
	logs     strings.Builder
	cleanups []func()
}

func (f *failingT) Helper()                           {}
func (f *failingT) Cleanup(fn func())                 { f.cleanups = append(f.cleanups, fn) }
func (f *failingT) TempDir() string                   { return f.real.TempDir() }
func (f *failingT) Skipf(format string, args ...any)  { f.Fatalf(format, args...) }
func (f *failingT) Fatalf(format string, args ...any) { f.Errorf(format, args...); runtime.Goexit() }

func (f *failingT) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *failingT) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(&f.logs, format+"\n", args...)
}

func (f *failingT) Errorf(format string, args ...any) {
	f.Logf(format, args...)
	f.mu.Lock()
	f.failed = true
	f.mu.Unlock()
}

// runCleanups runs the cleanups last first, as testing does.
func (f *failingT) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// A scenario that fails leaves no namespace, process or socket behind, and
// the failure shows the agents' logs.
func TestLANCleansUpAfterFailure(t *testing.T) {
	if err := testnet.CheckNetns(); err != nil {
		if os.Getenv(testnet.RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ft := &failingT{real: t}
	var lan *LAN
	done := make(chan struct{})
	go func() {
		defer close(done)
		lan = startLAN(ft, 2)
		lan.WaitConnected(1)
		ft.Fatalf("the scenario failed here")
	}()
	<-done
	if lan == nil {
		t.Fatalf("StartLAN failed:\n%s", ft.logs.String())
	}
	// testnet names a LAN's namespaces trove-<pid>-<run>-...
	ours := func() int {
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(out), fmt.Sprintf("trove-%d-", os.Getpid()))
	}
	if n := ours(); n != 3 {
		t.Errorf("the LAN made %d namespaces, want 3", n)
	}
	ft.runCleanups()
	if n := ours(); n != 0 {
		t.Errorf("%d namespaces of this process remain after the cleanups", n)
	}
	for i := range lan.N() {
		if _, err := agent.Dial(lan.Home(i)); err == nil {
			t.Errorf("agent %d still answers on its control socket", i)
		}
	}
	if logs := ft.logs.String(); !strings.Contains(logs, "agent1") || !strings.Contains(logs, "agent started") {
		t.Errorf("the failure did not show the agents' logs:\n%s", logs)
	}
}
