package testnet

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
)

func TestTCCommands(t *testing.T) {
	for _, tc := range []struct {
		link Link
		want []string
	}{
		{Link{}, nil},
		{Link{Rate: 100e6}, []string{"qdisc add dev d root handle 1: tbf rate 100000000bit burst 125000 latency 50ms"}},
		{Link{Rate: 1e6}, []string{"qdisc add dev d root handle 1: tbf rate 1000000bit burst 32768 latency 50ms"}},
		{Link{Delay: 20 * time.Millisecond, Loss: 0.5}, []string{"qdisc add dev d root handle 1: netem limit 100000 delay 20000us loss 0.5%"}},
		{Link{Rate: 100e6, Delay: time.Millisecond}, []string{
			"qdisc add dev d root handle 1: netem limit 100000 delay 1000us",
			"qdisc add dev d parent 1:1 handle 10: tbf rate 100000000bit burst 125000 latency 50ms",
		}},
	} {
		var got []string
		for _, c := range tcCommands("d", tc.link) {
			got = append(got, strings.Join(c, " "))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v:\n got %q\nwant %q", tc.link, got, tc.want)
		}
	}
}

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
	requireNetns(t)
	ft := &failingT{real: t}
	var lan *LAN
	done := make(chan struct{})
	go func() {
		defer close(done)
		lan = StartLAN(ft, 2)
		lan.WaitConnected(1)
		ft.Fatalf("the scenario failed here")
	}()
	<-done
	if lan == nil {
		t.Fatalf("StartLAN failed:\n%s", ft.logs.String())
	}
	var pids []int
	for _, nd := range lan.nodes {
		pids = append(pids, nd.cmd.Process.Pid)
	}
	made := slices.Clone(lan.made)
	if len(made) != 3 {
		t.Fatalf("made namespaces %v, want 3", made)
	}
	ft.runCleanups()

	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range made {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s is still there:\n%s", ns, out)
		}
	}
	for i, pid := range pids {
		if alive(pid) {
			t.Errorf("agent %d (pid %d) still runs", i, pid)
		}
		if _, err := agent.Dial(lan.Home(i)); err == nil {
			t.Errorf("agent %d still answers on its control socket", i)
		}
	}
	if logs := ft.logs.String(); !strings.Contains(logs, "agent1") || !strings.Contains(logs, "agent started") {
		t.Errorf("the failure did not show the agents' logs:\n%s", logs)
	}
}
