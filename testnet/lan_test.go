package testnet_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/testnet"
	"github.com/trove-p2p/trove/testnet/nettest"
)

// Three agents in their own network namespaces find each other by mDNS
// alone (no static peers) within a few seconds.
func TestLANDiscoveryByMDNS(t *testing.T) {
	lan := nettest.StartLAN(t, 3)
	lan.WaitConnected(2)
	d, r := time.Since(lan.Started()), time.Since(lan.Ready())
	t.Logf("mDNS discovery: %v (from launching the agents; %v after the last one answered)", d, r)
	if d > 5*time.Second {
		t.Errorf("mDNS discovery took %v; want a few seconds at most", d)
	}
	for i := range lan.N() {
		if st := lan.Status(i); st.PeerID != lan.ID(i) || st.PeersConnected != 2 {
			t.Errorf("agent %d: status %+v", i, st)
		}
	}
}

// A stranger on the LAN, paired by no one, finds the group by mDNS and
// dials it (it allows them), but is refused, while the paired agents
// connect to each other.
func TestLANRefusesStranger(t *testing.T) {
	lan := nettest.StartLAN(t, 3, testnet.WithoutPairing(2))
	lan.WaitPeers(0, 1)
	lan.WaitPeers(1, 1)
	stranger := lan.ID(2)
	// What must not happen has no event to wait for: check for a while.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, i := range []int{0, 1} {
			if out := lan.Trove(i, "peers", "--json"); strings.Contains(out, stranger) {
				t.Fatalf("agent %d lists the stranger among its peers: %s", i, out)
			}
		}
	}
	// Each of its dials completes the handshake on its side and is closed
	// by the other side's gater a few milliseconds later: between dials
	// it has no connection.
	lan.WaitPeers(2, 0)
	log, err := os.ReadFile(lan.Log(2))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "found peer on the LAN") {
		t.Errorf("the stranger never found the group by mDNS, so the test proves nothing; its log:\n%s", log)
	}
}

// An agent killed with SIGKILL restarts in its home and rejoins, except
// across a partition, until it is healed.
func TestLANKillRestartPartition(t *testing.T) {
	lan := nettest.StartLAN(t, 3, testnet.WithLink(testnet.Link{Rate: 1e9}))
	lan.WaitConnected(2)
	lan.Kill(2)
	// The others may keep counting the dead agent for a while: over QUIC
	// nothing tells them it died until the idle timeout.
	lan.Partition(1, 2)
	lan.Restart(2)
	lan.WaitPeers(2, 1) // agent 0 only
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st := lan.Status(2); st.PeersConnected != 1 {
			t.Fatalf("agent 2 has %d connections across the partition, want 1 (agent 0)", st.PeersConnected)
		}
	}
	lan.Heal(1, 2)
	d := lan.WaitConnected(2)
	t.Logf("reconnected %v after healing", d)
}

// BenchmarkMDNSDiscovery measures how long three agents on a namespace LAN
// take to find and connect to each other by mDNS alone: ms/discovery from
// launching their processes (so including their start), ms/after-ready
// from the moment the last one answered on its control socket. Root only.
func BenchmarkMDNSDiscovery(b *testing.B) {
	var total, afterReady time.Duration
	for range b.N {
		lan := nettest.StartLAN(b, 3)
		lan.WaitConnected(2)
		total += time.Since(lan.Started())
		afterReady += time.Since(lan.Ready())
		if err := lan.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "ms/discovery")
	b.ReportMetric(float64(afterReady.Microseconds())/1e3/float64(b.N), "ms/after-ready")
}
