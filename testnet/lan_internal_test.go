package testnet

import (
	"os"
	"os/exec"
	"slices"
	"strings"
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

// A LAN closed in the middle of a scenario leaves no namespace, process
// or socket behind.
func TestLANCleansUp(t *testing.T) {
	if err := CheckNetns(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	lan, err := NewLAN(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lan.WaitConnected(1); err != nil {
		lan.Close()
		t.Fatal(err)
	}
	var pids []int
	for _, nd := range lan.nodes {
		pids = append(pids, nd.cmd.Process.Pid)
	}
	made := slices.Clone(lan.made)
	if len(made) != 3 {
		lan.Close()
		t.Fatalf("made namespaces %v, want 3", made)
	}
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}

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
	if tails := lan.LogTails(); !strings.Contains(tails, "agent1") || !strings.Contains(tails, "agent started") {
		t.Errorf("LogTails does not show the agents' logs:\n%s", tails)
	}
}
