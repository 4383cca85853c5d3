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
// peer ID through it, and a sync must run between them. (Hole punching
// does not yet turn the connection direct here within 15 s: not checked.)
func TestNATRelay(t *testing.T) {
	if err := CheckNetns(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
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
    oifname "wan" masquerade
  }
}
`
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
	start(hostA, "--relay", relayAddr)
	start(hostB, "--relay", relayAddr)

	file := filepath.Join(dir, "note.txt")
	os.WriteFile(file, []byte("made behind one NAT, read behind another\n"), 0o644)
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
	// b finds a by its ID through the relay.
	var via string
	deadline = time.Now().Add(45 * time.Second)
	for via == "" {
		out, _ := trove(hostB, "peers", "--json")
		var peers []struct {
			ID        string `json:"id"`
			Connected bool   `json:"connected"`
			Via       string `json:"via"`
		}
		json.Unmarshal([]byte(out), &peers)
		for _, p := range peers {
			if p.ID == ids[hostA] && p.Connected {
				via = p.Via
			}
		}
		if via == "" && time.Now().After(deadline) {
			t.Fatalf("b never reached a: %s", out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("b reached a: %s", via)
	if _, err := trove(hostB, "sync", path); err != nil {
		t.Fatalf("sync between the NATed laptops: %v", err)
	}
}
