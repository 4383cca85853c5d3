package testnet

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// Net is a network of in-process agents on loopback.
type Net struct {
	t     TB
	cfg   config
	nodes []*node
}

type node struct {
	home    string
	id      peer.ID
	listen  []string // the addresses bound at first start, reused on restart
	agent   *agent.Agent
	log     *logTail
	nixRoot string // WithNixStores: where its Nix store is
}

// Start starts n agents on loopback (TCP, or QUIC with WithQUIC), each with
// its own home in t.TempDir(), mDNS off. Unless WithoutPairing says
// otherwise, every agent allows every other and keeps connected to it as a
// static peer. Start returns once every agent runs; use WaitConnected to
// wait for the connections. The agents stop when the test ends.
func Start(t TB, n int, opts ...Option) *Net {
	t.Helper()
	net := &Net{t: t, cfg: newConfig(opts)}
	for i := range n {
		home := t.TempDir()
		key, err := p2p.LoadOrCreateKey(filepath.Join(home, "keys"))
		if err != nil {
			t.Fatalf("testnet: agent %d identity: %v", i, err)
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			t.Fatalf("testnet: agent %d identity: %v", i, err)
		}
		nd := &node{home: home, id: id, log: &logTail{}}
		if net.cfg.nix {
			nd.nixRoot = t.TempDir()
		}
		net.nodes = append(net.nodes, nd)
	}
	// Registered after the homes, so it runs before they are removed.
	t.Cleanup(net.close)
	for i, nd := range net.nodes {
		g := p2p.NewTrustGroup(nil)
		for j, other := range net.nodes {
			if net.cfg.allows(i, j) {
				g.Allow(other.id, agentName(j))
			}
		}
		if err := agent.SaveTrust(nd.home, g); err != nil {
			t.Fatalf("testnet: agent %d trust group: %v", i, err)
		}
	}
	listen := "/ip4/127.0.0.1/tcp/0"
	if net.cfg.quic {
		listen = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	for i, nd := range net.nodes {
		// Agents start one by one: the first is the DHT's bootstrap peer.
		net.start(i, []string{listen}, nil)
		for _, a := range nd.agent.Node.Host().Network().ListenAddresses() {
			nd.listen = append(nd.listen, a.String())
		}
	}
	// Static peers are only known once every agent listens, so they are
	// added the way agent.Config.Peers adds them.
	for i, nd := range net.nodes {
		for j, other := range net.nodes {
			if net.cfg.allows(i, j) {
				nd.agent.Node.KeepConnected(other.agent.Node.AddrInfo())
			}
		}
	}
	return net
}

// start starts agent i in its home.
func (net *Net) start(i int, listen, peers []string) {
	net.t.Helper()
	nd := net.nodes[i]
	cfg := agent.Config{
		Home: nd.home, StoreDir: "/nix/store", Listen: listen, Peers: peers,
		DHT: net.cfg.dht, Logger: slog.New(slog.NewTextHandler(nd.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if net.cfg.dht && i > 0 {
		cfg.Bootstrap = net.p2pAddrs(0)
	}
	if nd.nixRoot != "" {
		kind, err := store.ParseKind(store.BackendNix, "local?root="+nd.nixRoot)
		if err != nil {
			net.t.Fatalf("testnet: agent %d: %v", i, err)
		}
		cfg.Kind = kind
	}
	a, err := agent.Start(context.Background(), cfg)
	if err != nil {
		net.t.Fatalf("testnet: starting agent %d: %v", i, err)
	}
	nd.agent = a
}

// NixRoot is the directory agent i's Nix store is under (WithNixStores):
// pass `--store local?root=DIR` to Nix's commands to look at it.
func (net *Net) NixRoot(i int) string { return net.nodes[i].nixRoot }

// p2pAddrs are agent i's listen addresses ending in /p2p/<id>.
func (net *Net) p2pAddrs(i int) []string {
	nd := net.nodes[i]
	var out []string
	for _, a := range nd.listen {
		out = append(out, a+"/p2p/"+nd.id.String())
	}
	return out
}

// N is the number of agents.
func (net *Net) N() int { return len(net.nodes) }

// Agent is agent i, or nil while it is stopped.
func (net *Net) Agent(i int) *agent.Agent { return net.nodes[i].agent }

// Agents are the agents, nil where stopped.
func (net *Net) Agents() []*agent.Agent {
	out := make([]*agent.Agent, len(net.nodes))
	for i, nd := range net.nodes {
		out[i] = nd.agent
	}
	return out
}

// Home is agent i's home directory.
func (net *Net) Home(i int) string { return net.nodes[i].home }

// ID is agent i's peer ID (also while it is stopped).
func (net *Net) ID(i int) peer.ID { return net.nodes[i].id }

// Stop stops agent i cleanly. Its home stays, for Restart.
func (net *Net) Stop(i int) {
	net.t.Helper()
	nd := net.nodes[i]
	if nd.agent == nil {
		return
	}
	err := nd.agent.Close()
	nd.agent = nil
	if err != nil {
		net.t.Fatalf("testnet: stopping agent %d: %v", i, err)
	}
}

// Restart stops agent i if it runs and starts it again in the same home on
// the same addresses, with the agents it allows as static peers. The others
// redial it by themselves.
func (net *Net) Restart(i int) {
	net.t.Helper()
	net.Stop(i)
	var peers []string
	for j := range net.nodes {
		if net.cfg.allows(i, j) {
			peers = append(peers, net.p2pAddrs(j)...)
		}
	}
	net.start(i, net.nodes[i].listen, peers)
}

// WaitConnected waits until every running agent has exactly k connected
// peers, and fails the test if that takes longer than 30 s.
func (net *Net) WaitConnected(k int) time.Duration {
	net.t.Helper()
	var idx []int
	for i, nd := range net.nodes {
		if nd.agent != nil {
			idx = append(idx, i)
		}
	}
	return net.wait(k, idx)
}

// WaitPeers waits until agent i has exactly k connected peers.
func (net *Net) WaitPeers(i, k int) time.Duration {
	net.t.Helper()
	return net.wait(k, []int{i})
}

func (net *Net) wait(k int, idx []int) time.Duration {
	net.t.Helper()
	start := time.Now()
	for {
		done := true
		for _, i := range idx {
			if a := net.nodes[i].agent; a == nil || len(a.Node.ConnectedPeers()) != k {
				done = false
			}
		}
		if done {
			return time.Since(start)
		}
		if time.Since(start) > connectTimeout {
			net.t.Fatalf("testnet: agents %v did not reach %d connected peers in %v:\n%s", idx, k, connectTimeout, net.describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describe says who is connected to whom, naming peers agent0, agent1, ...
func (net *Net) describe() string {
	names := map[peer.ID]string{}
	for i, nd := range net.nodes {
		names[nd.id] = agentName(i)
	}
	var b strings.Builder
	for i, nd := range net.nodes {
		if nd.agent == nil {
			fmt.Fprintf(&b, "  agent%d: stopped\n", i)
			continue
		}
		var conn []string
		for _, p := range nd.agent.Node.ConnectedPeers() {
			name, ok := names[p]
			if !ok {
				name = p.String()
			}
			conn = append(conn, name)
		}
		fmt.Fprintf(&b, "  agent%d (%s): %d connected %v\n", i, nd.id, len(conn), conn)
	}
	return b.String()
}

func (net *Net) close() {
	if net.t.Failed() {
		net.t.Logf("testnet: state at failure:\n%s", net.describe())
		for i, nd := range net.nodes {
			net.t.Logf("testnet: agent%d log (tail):\n%s", i, tailLines(nd.log.Bytes(), logTailLines))
		}
	}
	var wg sync.WaitGroup
	for i, nd := range net.nodes {
		if nd.agent == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nd.agent.Close(); err != nil {
				net.t.Errorf("testnet: stopping agent %d: %v", i, err)
			}
			nd.agent = nil
		}()
	}
	wg.Wait()
	for _, nd := range net.nodes {
		makeRemovable(nd.home)
	}
}

// makeRemovable makes the directories under dir writable, so that t.TempDir
// can remove the store's read-only trees when not running as root.
func makeRemovable(dir string) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if info, err := d.Info(); err == nil && info.Mode().Perm()&0o200 == 0 {
				os.Chmod(path, info.Mode().Perm()|0o700)
			}
		}
		return nil
	})
}
