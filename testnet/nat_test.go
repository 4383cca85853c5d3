package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNATRelay: two laptops behind two NAT routers (nftables masquerade,
// each in its own namespace), with only the group's relay in common on a
// "public" segment (11.0.0.0/24, which libp2p counts as public). Each
// agent is given the relay's address alone; they must find each other by
// peer ID through it. Behind two cone NATs, hole punching makes their
// connection direct within 10 s of their start, and the sync runs over
// it, not through the relay. Behind a symmetric NAT (a new public port
// for every destination) no punch can succeed, and the sync runs through
// the relay. When that NAT forgets its mappings (its state flushed, so
// a's connections leave by new public ports) while a is idle, a reserves
// on the relay again within seconds; when it forgets them in the middle
// of the sync, a reaches the relay again and the sync goes on to the end.
// In both, the members' reachability checks (AutoNAT v2) find the relay
// reachable and the laptops not.
func TestNATRelay(t *testing.T) {
	for _, tc := range []struct {
		name       string
		masqA      string // laptop a's router's masquerade rule
		wantDirect bool
	}{
		// Linux keeps the source port when it can: endpoint-independent
		// mapping, filtering by address and port (port-restricted cone).
		{"cone", `oifname "wan" masquerade`, true},
		// A random public port for every connection: endpoint-dependent
		// mapping (symmetric).
		{"symmetric", `oifname "wan" masquerade fully-random`, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testNATRelay(t, tc.masqA, tc.wantDirect, !tc.wantDirect) })
	}
}

func testNATRelay(t *testing.T, masqA string, wantDirect, portChange bool) {
	if err := CheckNetns(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	if _, err := exec.LookPath("conntrack"); err != nil && portChange {
		t.Skip("conntrack not installed")
	}
	bin, err := troveBinary()
	if err != nil {
		t.Fatal(err)
	}
	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	ns := func(x string) string { return fmt.Sprintf("trove-%d-%s-%s", os.Getpid(), run, x) }
	inet, relay, natA, natB, hostA, hostB := ns("br"), ns("0"), ns("1"), ns("2"), ns("3"), ns("4")
	all := []string{inet, relay, natA, natB, hostA, hostB}
	t.Cleanup(func() {
		for _, n := range all {
			deleteNetns(n)
		}
	})
	sh := func(args ...string) {
		t.Helper()
		if err := command(args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range all {
		sh("ip", "netns", "add", n)
		sh("ip", "-n", n, "link", "set", "lo", "up")
	}
	sh("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
	sh("ip", "-n", inet, "link", "set", "br0", "up")
	// link joins ns1 and ns2 by a veth pair whose ends are named name1 and
	// name2 there, addressed addr1 and addr2 when not empty, and up.
	links := 0
	link := func(ns1, name1, addr1, ns2, name2, addr2 string) {
		t.Helper()
		links++
		tmp := [2]string{fmt.Sprintf("v%s%da", run, links), fmt.Sprintf("v%s%db", run, links)}
		sh("ip", "link", "add", tmp[0], "type", "veth", "peer", "name", tmp[1])
		for i, end := range [2][3]string{{ns1, name1, addr1}, {ns2, name2, addr2}} {
			sh("ip", "link", "set", tmp[i], "netns", end[0])
			sh("ip", "-n", end[0], "link", "set", tmp[i], "name", end[1])
			if end[2] != "" {
				sh("ip", "-n", end[0], "addr", "add", end[2], "dev", end[1])
			}
			sh("ip", "-n", end[0], "link", "set", end[1], "up")
		}
	}
	// The "internet": the relay and both NAT routers' WAN sides.
	for i, n := range []string{relay, natA, natB} {
		port := fmt.Sprintf("p%d", i)
		link(n, "wan", fmt.Sprintf("11.0.0.%d/24", i+1), inet, port, "")
		sh("ip", "-n", inet, "link", "set", port, "master", "br0")
	}
	// Each laptop behind its router, masqueraded (a port-restricted cone).
	for i, pair := range [][2]string{{natA, hostA}, {natB, hostB}} {
		nat, host := pair[0], pair[1]
		link(nat, "lan", fmt.Sprintf("192.168.%d.1/24", i+1), host, "eth0", fmt.Sprintf("192.168.%d.2/24", i+1))
		sh("ip", "-n", host, "route", "add", "default", "via", fmt.Sprintf("192.168.%d.1", i+1))
		sh("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		rules := `flush ruleset
table inet filter {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
  }
}
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    MASQ
  }
}
`
		masq := `oifname "wan" masquerade`
		if nat == natA {
			masq = masqA
		}
		rules = strings.Replace(rules, "MASQ", masq, 1)
		f := filepath.Join(t.TempDir(), "nat.nft")
		os.WriteFile(f, []byte(rules), 0o644)
		if err := command("ip", "netns", "exec", nat, "nft", "-f", f); err != nil {
			// The kernel lacks nf_tables NAT (a container without
			// the modules): no NAT routers to test behind.
			t.Skipf("no NAT in this kernel: %v", err)
		}
	}

	// Homes, identities, pairing (by ID: nobody knows an address but the relay's).
	dir := t.TempDir()
	homes := map[string]string{relay: filepath.Join(dir, "relay"), hostA: filepath.Join(dir, "a"), hostB: filepath.Join(dir, "b")}
	trove := func(n string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, append([]string{"--home", homes[n]}, args...)...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("trove %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return string(out), err
	}
	ids := map[string]string{}
	for _, n := range []string{relay, hostA, hostB} {
		out, err := trove(n, "id", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var id struct {
			ID string `json:"id"`
		}
		json.Unmarshal([]byte(out), &id)
		ids[n] = id.ID
	}
	for _, n := range []string{relay, hostA, hostB} {
		for _, m := range []string{relay, hostA, hostB} {
			if n != m {
				if _, err := trove(n, "peer", "allow", ids[m], "--name", filepath.Base(homes[m])); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	relayAddr := "/ip4/11.0.0.1/tcp/4807/p2p/" + ids[relay]
	start := func(n string, args ...string) {
		log, _ := os.Create(filepath.Join(dir, filepath.Base(homes[n])+".log"))
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(log.Name())
				t.Logf("%s's log:\n%s", filepath.Base(homes[n]), b)
			}
		})
		cmd := exec.Command("ip", append([]string{"netns", "exec", n, bin, "--verbose", "--home", homes[n], "agent", "--mdns=false",
			"--listen", "/ip4/0.0.0.0/tcp/4807", "--listen", "/ip4/0.0.0.0/udp/4807/quic-v1"}, args...)...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	}
	start(relay, "--relay-service")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := trove(relay, "status"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the relay never started: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	started := time.Now()
	start(hostA, "--relay", relayAddr)
	start(hostB, "--relay", relayAddr)

	// 8 MiB that does not compress: whether it crossed the relay shows.
	file := filepath.Join(dir, "photo.raw")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	os.WriteFile(file, data, 0o644)
	var path string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := trove(hostA, "add", file)
		if err == nil {
			path = strings.TrimSpace(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	type peerStatus struct {
		ID        string `json:"id"`
		Connected bool   `json:"connected"`
		Via       string `json:"via"`
		BytesIn   int64  `json:"bytesIn"`
		BytesOut  int64  `json:"bytesOut"`
	}
	peers := func(n string) map[string]peerStatus {
		out, _ := trove(n, "peers", "--json")
		var list []peerStatus
		json.Unmarshal([]byte(out), &list)
		m := map[string]peerStatus{}
		for _, p := range list {
			m[p.ID] = p
		}
		return m
	}
	// b finds a by its ID through the relay; behind cone NATs, the
	// connection then turns direct.
	want := "relayed"
	if wantDirect {
		want = "hole-punched"
	}
	var via string
	for deadline := started.Add(10 * time.Second); via != want; time.Sleep(100 * time.Millisecond) {
		if p := peers(hostB)[ids[hostA]]; p.Connected {
			via = p.Via
		}
		if via != want && time.Now().After(deadline) {
			t.Fatalf("10 s after the laptops started, b's connection to a is %q, want %q", via, want)
		}
	}
	t.Logf("b reached a %s, %v after the start", via, time.Since(started).Round(10*time.Millisecond))
	// AutoNAT v2: the members dial each other back. The relay, on the
	// public segment, is reachable; the laptops behind their NATs are not.
	reach := func(n string) string {
		out, _ := trove(n, "status", "--json")
		var st struct {
			Reachability string `json:"reachability"`
		}
		json.Unmarshal([]byte(out), &st)
		return st.Reachability
	}
	wantReach := map[string]string{relay: "public", hostA: "private", hostB: "private"}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := map[string]string{relay: reach(relay), hostA: reach(hostA), hostB: reach(hostB)}
		if got[relay] == wantReach[relay] && got[hostA] == wantReach[hostA] && got[hostB] == wantReach[hostB] {
			t.Logf("reachability known %v after the start: relay public, laptops private", time.Since(started).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reachability: relay %s, a %s, b %s; want public, private, private", got[relay], got[hostA], got[hostB])
		}
	}
	if portChange {
		// a's NAT forgets its mappings while a has nothing to send: a
		// learns it by its keepalive to the relay (the relay resets
		// the connection the ping arrives on, from a port it does not
		// know), not minutes later, and reserves again.
		reservedA := func() int {
			b, _ := os.ReadFile(filepath.Join(dir, "a.log"))
			return strings.Count(string(b), "reserved on the relay")
		}
		n := reservedA()
		flushed := time.Now()
		sh("ip", "netns", "exec", natA, "conntrack", "-F")
		for reservedA() == n {
			if time.Since(flushed) > 10*time.Second {
				t.Fatalf("a did not reserve on the relay again in 10 s after its NAT forgot its idle mapping")
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("a reserved again %v after its NAT forgot its idle mapping", time.Since(flushed).Round(10*time.Millisecond))
	}
	before := peers(relay)
	if portChange {
		// What b receives at 20 Mbit/s: the sync takes over 3 s, and a's
		// NAT forgets its mappings 1 s into it.
		for _, c := range tcCommands("lan", Link{Rate: 20e6}) {
			sh(append([]string{"tc", "-n", natB}, c...)...)
		}
		time.AfterFunc(time.Second, func() { command("ip", "netns", "exec", natA, "conntrack", "-F") })
	}
	t0 := time.Now()
	if _, err := trove(hostB, "sync", path); err != nil {
		t.Fatalf("sync between the NATed laptops: %v", err)
	}
	t.Logf("the sync took %v", time.Since(t0).Round(10*time.Millisecond))
	if got := peers(hostB)[ids[hostA]].Via; got != want {
		t.Errorf("after the sync, b's connection to a is %q, want %q", got, want)
	}
	// libp2p's meter is updated every second.
	time.Sleep(1500 * time.Millisecond)
	after := peers(relay)
	relayed := after[ids[hostB]].BytesOut - before[ids[hostB]].BytesOut
	t.Logf("the relay sent b %d bytes during the sync of %d", relayed, len(data))
	if wantDirect && relayed > int64(len(data))/4 {
		t.Errorf("the relay carried %d bytes of a %d-byte sync over a direct connection", relayed, len(data))
	}
	if !wantDirect && relayed < int64(len(data)) {
		t.Errorf("the relay carried only %d bytes of a %d-byte sync behind a symmetric NAT", relayed, len(data))
	}
}
