package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/store"
)

// startAgent runs an agent in-process in home, on loopback, as `trove agent` would.
func startAgent(t *testing.T, home string) *agent.Agent {
	t.Helper()
	ag, err := agent.Start(context.Background(), agent.Config{
		Home: home, StoreDir: "/nix/store", Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		API: localapi.API,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	return ag
}

func TestCommandsGoThroughARunningAgent(t *testing.T) {
	home := t.TempDir()
	ag := startAgent(t, home)

	// The store is the agent's: add is forwarded, with a relative path
	// resolved against the caller's directory.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
	wd, _ := os.Getwd()
	os.Chdir(dir)
	out, stderr, code := runTrove(t, home, "add", "hello.txt")
	os.Chdir(wd)
	if code != 0 || out != "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt\n" {
		t.Fatalf("add through the agent: %d %q %q", code, out, stderr)
	}
	if ok, _ := ag.Store.IsValid(mustParse(t, "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")); !ok {
		t.Fatal("the path is not in the agent's store")
	}

	var st agent.Status
	if err := json.Unmarshal([]byte(mustTrove(t, home, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.PeerID != ag.Node.ID().String() || st.StorePaths != 1 || len(st.Addrs) == 0 {
		t.Fatalf("status = %+v", st)
	}

	other := startAgent(t, t.TempDir())
	mustTrove(t, home, "peer", "allow", other.Node.ID().String(), "--name", "other")
	if !ag.Trust.Contains(other.Node.ID()) {
		t.Fatal("peer allow did not reach the agent")
	}
	if !strings.Contains(mustTrove(t, home, "peer", "list"), "other") {
		t.Fatal("peer list does not show the new peer")
	}
	var ids struct {
		ID      string `json:"id"`
		Running bool   `json:"agentRunning"`
	}
	json.Unmarshal([]byte(mustTrove(t, home, "id", "--json")), &ids)
	if ids.ID != ag.Node.ID().String() || !ids.Running {
		t.Fatalf("id = %+v", ids)
	}
	if !strings.Contains(mustTrove(t, home, "peers"), "other") {
		t.Fatal("peers does not list the trusted peer")
	}
	mustTrove(t, home, "peer", "remove", other.Node.ID().String())
	if ag.Trust.Contains(other.Node.ID()) {
		t.Fatal("peer remove did not reach the agent")
	}
	// The trust group survives a restart: it is on disk.
	if g, err := agent.LoadTrust(home); err != nil || len(g.Peers()) != 0 {
		t.Fatalf("trust file after remove: %v %v", g, err)
	}
}

func TestPeersNeedsAnAgent(t *testing.T) {
	home := t.TempDir()
	_, stderr, code := runTrove(t, home, "peers")
	if want := "trove: no trove agent is running in " + home + " (start one with `trove agent`)\n"; code != 1 || stderr != want {
		t.Fatalf("peers without agent: exit %d, %q; want 1, %q", code, stderr, want)
	}
}

// Without an agent, status says so and fails, without opening the store:
// it must not stand in the way of an agent starting (issue 11).
func TestStatusWithoutAnAgent(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	want := "trove: no trove agent is running in " + home + " (start one with `trove agent`)\n"
	stdout, stderr, code := runTrove(t, home, "status")
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("status without an agent: exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout, stderr, want)
	}
	stdout, stderr, code = runTrove(t, home, "status", "--json")
	var st struct {
		Running *bool  `json:"running"`
		Home    string `json:"home"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil || st.Running == nil || *st.Running || st.Home != home || code != 1 || stderr != want {
		t.Errorf("status --json without an agent: exit %d, stdout %q (%v), stderr %q; want 1, running false and the home", code, stdout, err, stderr)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("status without an agent created the home: %v", err)
	}

	// Even while a command holds the store, status only says no agent runs.
	mustTrove(t, home, "init")
	openStore(t, home)
	if _, stderr, code := runTrove(t, home, "status"); code != 1 || stderr != want {
		t.Errorf("status while a command holds the store: exit %d, %q; want 1, %q", code, stderr, want)
	}
}

// A command that finds the store held by an agent whose control socket
// does not answer yet (it is starting) waits for it, says so once, and
// goes through it.
func TestCommandsWaitForAStartingAgent(t *testing.T) {
	home := newHome(t)
	ag := startAgent(t, home)
	path := mustAdd(t, home, "hello.txt", "hello\n")

	// Turn the running agent back into a starting one: its lock says
	// starting and its socket is out of the way until the test puts it back.
	sock := agent.SocketPath(home)
	mustDo(t, os.Rename(sock, sock+".away"))
	mustDo(t, ag.Store.SetRole(store.RoleAgentStarting))
	const startup = time.Second // long enough for every command to find it starting
	time.AfterFunc(startup, func() {
		ag.Store.SetRole(store.RoleAgent)
		os.Rename(sock+".away", sock)
	})

	began := time.Now()
	cmds := [][]string{{"status"}, {"peers", "--json"}, {"path-info", "--all"}}
	var wg sync.WaitGroup
	for _, args := range cmds {
		wg.Go(func() {
			stdout, stderr, code := runTrove(t, home, args...)
			waiting := fmt.Sprintf("trove: waiting for the agent (pid %d) to start…\n", os.Getpid())
			if code != 0 || stderr != waiting {
				t.Errorf("trove %s while the agent starts: exit %d, stderr %q; want 0 and %q", strings.Join(args, " "), code, stderr, waiting)
			}
			switch args[0] {
			case "status":
				if !strings.Contains(stdout, "peer ID:") {
					t.Errorf("status printed %q", stdout)
				}
			case "path-info":
				if stdout != path+"\n" {
					t.Errorf("path-info --all printed %q, want %s", stdout, path)
				}
			}
		})
	}
	wg.Wait()
	if took := time.Since(began); took < startup {
		t.Errorf("the commands ended after %v, before the agent answered", took)
	}
}

// A command that finds the store held by an agent that is stopping waits
// for it to let go, then runs here.
func TestCommandsWaitForAStoppingAgent(t *testing.T) {
	home := newHome(t)
	path := mustAdd(t, home, "hello.txt", "hello\n")
	s, err := store.Open(home, store.Options{Role: store.RoleAgentStopping})
	mustDo(t, err)
	const stopping = time.Second // long enough for the command to find it stopping
	time.AfterFunc(stopping, func() { s.Close() })

	began := time.Now()
	stdout, stderr, code := runTrove(t, home, "path-info", "--all")
	waiting := fmt.Sprintf("trove: waiting for the agent (pid %d) to stop…\n", os.Getpid())
	if code != 0 || stdout != path+"\n" || stderr != waiting {
		t.Errorf("path-info --all while the agent stops: exit %d, stdout %q, stderr %q; want 0, %s and %q", code, stdout, stderr, path, waiting)
	}
	if took := time.Since(began); took < stopping {
		t.Errorf("path-info ended after %v, before the agent let go", took)
	}
}

func TestPeerAllowWithoutAgentEditsTheFile(t *testing.T) {
	home := t.TempDir()
	id := "12D3KooWGRUVh7dPpXwHmXhHJtJZmPoFgLDbfRPD2Jn9nQoMnKDS"
	mustTrove(t, home, "peer", "allow", id, "--name", "laptop")
	out := mustTrove(t, home, "peer", "list", "--json")
	if !strings.Contains(out, id) || !strings.Contains(out, "laptop") {
		t.Fatalf("peer list --json = %s", out)
	}
	if _, stderr, code := runTrove(t, home, "peer", "allow", "not-a-peer-id"); code != 2 || !strings.Contains(stderr, "not a peer ID") {
		t.Fatalf("bad peer ID: %d %q", code, stderr)
	}
}

func mustParse(t *testing.T, base string) nix.Path {
	t.Helper()
	p, err := nix.ParseBase(base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// -v shows the debug log of a command that runs inside the agent, as it
// does when the command runs here (and as the old argv forwarding did);
// without -v the caller sees none of it.
func TestVerboseShowsTheAgentSideLog(t *testing.T) {
	home := t.TempDir()
	startAgent(t, home)
	p := mustAdd(t, home, "hello.txt", "hello\n")
	for _, tc := range []struct {
		args    []string
		want    string // in stderr
		notWant string
	}{
		{args: []string{"-v", "sync", p}, want: "msg=planned"},
		{args: []string{"sync", p}, notWant: "msg=planned"},
		{args: []string{"-v", "sync", "--json", p}, want: "msg=planned"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := runTrove(t, home, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if tc.want != "" && !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
			if tc.notWant != "" && strings.Contains(stderr, tc.notWant) {
				t.Errorf("stderr has %q:\n%s", tc.notWant, stderr)
			}
		})
	}
}
