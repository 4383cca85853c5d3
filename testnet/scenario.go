package testnet

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/profile"
)

// The scenario vocabulary: a multi-agent test reads as a short story.
//
//	net := testnet.Start(t, 3)
//	net.WaitConnected(2)
//	net.Follow(1, "laptop", true)
//	net.Follow(2, "laptop", true)
//	net.Publish(0, "laptop", map[string]string{"etc/motd": "hello"})
//	net.WaitGeneration(1, "laptop", 1)
//	net.Partition(0, 2)
//	net.Publish(0, "laptop", map[string]string{"etc/motd": "hello again"})
//	net.WaitGeneration(2, "laptop", 2) // through agent 1
//	net.AssertSameTree("laptop", 0, 1, 2)

// publisherKey is agent i's signing key, made on first use; every other
// agent trusts it for name.
func (net *Net) publisherKey(i int, name string) manifest.SecretKey {
	net.t.Helper()
	file := filepath.Join(net.Home(i), "keys", agentName(i)+".secret")
	var sk manifest.SecretKey
	if b, err := os.ReadFile(file); err == nil {
		if sk, err = manifest.ParseSecretKey(string(b)); err != nil {
			net.t.Fatalf("testnet: agent %d key: %v", i, err)
		}
	} else {
		if sk, err = manifest.GenerateKey(agentName(i)); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
		if err := os.WriteFile(file, []byte(sk.String()+"\n"), 0o600); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
	}
	for j, nd := range net.nodes {
		if nd.agent == nil {
			continue
		}
		if err := nd.agent.Keys.Add(sk.Public(), name); err != nil {
			net.t.Fatalf("testnet: agent %d trusting %s: %v", j, sk.Name, err)
		}
	}
	return sk
}

// Publish writes files (relative path → contents; a name under bin/ is
// executable) as a configuration tree, adds it to agent i's store and
// publishes it as the next generation of name, with bin/activate as its
// activation command and bin/check as its health check if there are
// those. It returns the generation.
func (net *Net) Publish(i int, name string, files map[string]string) uint64 {
	net.t.Helper()
	a := net.mustRun(i)
	dir := filepath.Join(net.t.TempDir(), name)
	for rel, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		mode := os.FileMode(0o644)
		if filepath.Base(filepath.Dir(p)) == "bin" {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
	}
	pi, err := a.Store.AddTree(context.Background(), dir, name)
	if err != nil {
		net.t.Fatalf("testnet: agent %d adding %s: %v", i, name, err)
	}
	var cmds profile.Commands
	if _, ok := files["bin/activate"]; ok {
		cmds.Activate = "bin/activate"
	}
	if _, ok := files["bin/check"]; ok {
		cmds.Check = "bin/check"
	}
	return net.publish(i, name, pi.Path, cmds)
}

// PublishPath publishes the closure of root, valid in agent i's store, as
// the next generation of name, and returns its number.
func (net *Net) PublishPath(i int, name string, root nix.Path, activate string) uint64 {
	net.t.Helper()
	return net.publish(i, name, root, profile.Commands{Activate: activate})
}

func (net *Net) publish(i int, name string, root nix.Path, cmds profile.Commands) uint64 {
	net.t.Helper()
	m, err := net.mustRun(i).Publish(context.Background(), net.publisherKey(i, name), name, root, cmds)
	if err != nil {
		net.t.Fatalf("testnet: agent %d publishing %s: %v", i, name, err)
	}
	return m.Generation
}

// Follow makes agent i follow name, activating new generations if asked.
func (net *Net) Follow(i int, name string, activate bool) {
	net.t.Helper()
	net.FollowWith(i, agent.Follow{Name: name, Activate: activate})
}

// FollowWith makes agent i follow f.Name as f says (run activation
// commands, their timeout).
func (net *Net) FollowWith(i int, f agent.Follow) {
	net.t.Helper()
	if err := net.mustRun(i).SetFollow(context.Background(), f, true); err != nil {
		net.t.Fatalf("testnet: agent %d following %s: %v", i, f.Name, err)
	}
}

// Log is what agent i has logged so far (its tail).
func (net *Net) Log(i int) string { return string(net.nodes[i].log.Bytes()) }

// WaitGeneration waits until agent i's profile name is at generation gen.
func (net *Net) WaitGeneration(i int, name string, gen uint64) {
	net.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, _ := profile.OpenProfiles(net.mustRun(i).Store).Current(name)
		if cur == gen {
			return
		}
		if time.Now().After(deadline) {
			net.t.Fatalf("testnet: agent %d is at generation %d of %s, not %d, after 30s\n%s", i, cur, name, gen, net.describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Sync fetches the closures of roots into agent i's store from its peers.
func (net *Net) Sync(i int, roots ...nix.Path) *fetch.Report {
	net.t.Helper()
	a := net.mustRun(i)
	rep, err := fetch.New(a.Store, a.Node, fetch.Options{Keys: a.Keys}).Fetch(context.Background(), roots)
	if err != nil {
		net.t.Fatalf("testnet: agent %d sync: %v", i, err)
	}
	return rep
}

// Partition cuts agents i and j apart: each drops the other from its trust
// group (so the gater refuses it) and their connections close.
func (net *Net) Partition(i, j int) {
	net.t.Helper()
	for _, p := range [][2]int{{i, j}, {j, i}} {
		a := net.mustRun(p[0])
		if _, err := a.Remove(net.ID(p[1])); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
		a.Node.Host().Network().ClosePeer(net.ID(p[1]))
	}
}

// Heal undoes Partition(i, j).
func (net *Net) Heal(i, j int) {
	net.t.Helper()
	for _, p := range [][2]int{{i, j}, {j, i}} {
		if err := net.mustRun(p[0]).Allow(net.ID(p[1]), agentName(p[1])); err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
	}
	net.mustRun(i).Node.KeepConnected(net.mustRun(j).Node.AddrInfo())
}

// AssertSameTree checks that the profile name of each agent in idx points
// at the same NAR.
func (net *Net) AssertSameTree(name string, idx ...int) {
	net.t.Helper()
	var want nix.Hash
	for k, i := range idx {
		tree, err := filepath.EvalSymlinks(filepath.Join(profile.ProfilesDir(net.Home(i)), name))
		if err != nil {
			net.t.Fatalf("testnet: agent %d has no profile %s: %v", i, name, err)
		}
		h, _, err := nix.HashPath(tree)
		if err != nil {
			net.t.Fatalf("testnet: %v", err)
		}
		if k == 0 {
			want = h
		} else if h != want {
			net.t.Fatalf("testnet: agent %d's %s is %s, agent %d's is %s", i, name, h, idx[0], want)
		}
	}
}

func (net *Net) mustRun(i int) *agent.Agent {
	net.t.Helper()
	if a := net.nodes[i].agent; a != nil {
		return a
	}
	net.t.Fatalf("testnet: agent %d is stopped", i)
	return nil
}
