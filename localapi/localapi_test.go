package localapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

const storeDir = "/nix/store"

func startAgent(t *testing.T, home string) *agent.Agent {
	t.Helper()
	ag, err := agent.Start(context.Background(), agent.Config{
		Home: home, StoreDir: storeDir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: localapi.API,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	return ag
}

func helloFile(t *testing.T) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "hello.txt")
	os.WriteFile(p, []byte("hello\n"), 0o644)
	return p
}

const helloPath = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"

// The same operation gives the same answer in-process and through a
// running agent's socket.
func TestLocalAndRemoteAgree(t *testing.T) {
	ctx := context.Background()
	file := helloFile(t)
	req := localapi.AddRequest{Paths: []string{file}, Shown: []string{"hello.txt"}}

	e := localapi.Open(t.TempDir(), storeDir, nil)
	local, err := localapi.Add.Local(ctx, e, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	home := t.TempDir()
	ag := startAgent(t, home)
	c, err := localapi.Connect(ctx, home, storeDir, localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := localapi.Add.Remote(ctx, c, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(local.Paths) != 1 || local.Paths[0] != helloPath || len(remote.Paths) != 1 || remote.Paths[0] != helloPath {
		t.Fatalf("local %v, remote %v", local.Paths, remote.Paths)
	}
	pi, err := localapi.PathInfo.Remote(ctx, c, localapi.PathInfoRequest{Paths: []string{helloPath}, ClosureSize: true}, nil)
	if err != nil || len(pi.Infos) != 1 || pi.Infos[0].ClosureSize == 0 {
		t.Fatalf("path-info through the agent: %+v %v", pi, err)
	}
	if ok, _ := ag.Store.IsValid(mustPath(t, helloPath)); !ok {
		t.Fatal("the path is not in the agent's store")
	}
}

// Call goes through the agent when one owns the home, and runs here when
// none does.
func TestCallChoosesTheAgent(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	tgt := localapi.Target{Home: home, StoreDir: storeDir}
	id, err := localapi.Call(ctx, tgt, localapi.ID, localapi.IDRequest{}, nil)
	if err != nil || id.Running || id.ID == "" {
		t.Fatalf("without an agent: %+v %v", id, err)
	}
	if _, err := localapi.Call(ctx, tgt, localapi.Status, localapi.StatusRequest{}, nil); !errors.Is(err, agent.ErrNoAgent) {
		t.Fatalf("status without an agent: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "db")); err == nil {
		t.Fatal("status opened the store")
	}
	ag := startAgent(t, home)
	id, err = localapi.Call(ctx, tgt, localapi.ID, localapi.IDRequest{}, nil)
	if err != nil || !id.Running || id.ID != ag.Node.ID().String() {
		t.Fatalf("with an agent: %+v %v", id, err)
	}
	st, err := localapi.Call(ctx, tgt, localapi.Status, localapi.StatusRequest{}, nil)
	if err != nil || !st.Running {
		t.Fatalf("status: %+v %v", st, err)
	}
}

// Errors keep their kind across the socket, so the CLI exits and speaks
// as it does in-process.
func TestErrorKindsCrossTheSocket(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	startAgent(t, home)
	c, err := localapi.Connect(ctx, home, storeDir, localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = localapi.AllowPeer.Remote(ctx, c, localapi.PeerRequest{ID: "not-a-peer"}, nil)
	if !localapi.IsUsage(err) {
		t.Fatalf("a bad peer ID: %v, want a usage error", err)
	}
	_, err = localapi.Activate.Remote(ctx, c, localapi.ActivateRequest{Name: "laptop"}, nil)
	if !errors.Is(err, manifest.ErrUnknown) {
		t.Fatalf("an unknown configuration: %v", err)
	}
	// A store dir other than the agent's is refused.
	other, err := localapi.Connect(ctx, home, "/other/store", localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localapi.RootList.Remote(ctx, other, localapi.RootListRequest{}, nil); err == nil {
		t.Fatal("the agent served another store dir")
	}
}

// Events stream before the response: a bundle written to standard output
// arrives as Output events.
func TestEventsStream(t *testing.T) {
	ctx := context.Background()
	_, tgt := agentWithHello(t)
	var out []byte
	rep, err := localapi.Call(ctx, tgt, localapi.CreateBundle, localapi.CreateBundleRequest{Output: "-", Format: "nix-export", Refs: []string{helloPath}},
		func(ev localapi.Event) {
			if ev.Output != nil && ev.Output.Stream == 1 {
				out = append(out, ev.Output.Data...)
			}
		})
	if err != nil || rep == nil || rep.Paths != 1 {
		t.Fatalf("bundle: %+v %v", rep, err)
	}
	if len(out) == 0 {
		t.Fatal("no bundle bytes came as events")
	}
}

func mustPath(t *testing.T, s string) nix.Path {
	t.Helper()
	p, err := nix.ParsePath(storeDir, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A command whose talk with the agent fails (Ctrl-C during a sync, the
// agent dying mid-answer) says why, as the old argv forwarding did
// ("talking to the agent: …: interrupt signal received"), not "<nil>".
func TestCallSaysWhyTalkingToTheAgentFailed(t *testing.T) {
	home := t.TempDir()
	startAgent(t, home)
	tgt := localapi.Target{Home: home, StoreDir: storeDir}
	interrupted := errors.New("interrupt signal received")
	for _, tc := range []struct {
		name string
		call func(context.Context) error
	}{
		{"gc", func(ctx context.Context) error {
			_, err := localapi.Call(ctx, tgt, localapi.GC, localapi.GCRequest{}, nil)
			return err
		}},
		{"sync", func(ctx context.Context) error {
			_, err := localapi.Call(ctx, tgt, localapi.Sync, localapi.SyncRequest{Paths: []string{helloPath}}, nil)
			return err
		}},
		{"root-list", func(ctx context.Context) error {
			_, err := localapi.Call(ctx, tgt, localapi.RootList, localapi.RootListRequest{}, nil)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(interrupted)
			err := tc.call(ctx)
			if err == nil {
				t.Fatal("a cancelled call succeeded")
			}
			if msg := err.Error(); strings.Contains(msg, "<nil>") || !strings.Contains(msg, "talking to the agent") {
				t.Fatalf("error %q does not say why talking to the agent failed", msg)
			}
		})
	}
}

// A request is bounded, but by more than any command line: the old argv
// forwarding took 1 MiB of arguments, and a request carries each path
// argument twice (absolute, and as written). An oversized request is
// refused saying so.
func TestRequestSizeBound(t *testing.T) {
	ctx := context.Background()
	home, _ := agentWithHello(t)
	c, err := localapi.Connect(ctx, home, storeDir, localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		bytes   int    // about this much JSON
		wantErr string // "" for success
	}{
		{"small", 1 << 10, ""},
		{"over the old 1 MiB", 3 << 20, ""},
		{"huge", 40 << 20, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paths := make([]string, tc.bytes/(len(helloPath)+3))
			for i := range paths {
				paths[i] = helloPath
			}
			r, err := localapi.Closure.Remote(ctx, c, localapi.PathsRequest{Paths: paths}, nil)
			switch {
			case tc.wantErr == "" && (err != nil || len(r.Paths) != 1):
				t.Fatalf("closure of %d paths: %v %v", len(paths), r.Paths, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !localapi.IsUsage(err)):
				t.Fatalf("closure of %d paths: %v, want a usage error saying %q", len(paths), err, tc.wantErr)
			}
		})
	}
}

// A trove and an agent of different versions (the binary upgraded under
// a running agent) say so and what to do, not "404 page not found".
func TestVersionSkewSaysRestartTheAgent(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	startAgent(t, home)
	sock := agent.SocketPath(home)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, tc := range []struct {
		name, path, body string
		want             []string // in the answer
	}{
		// An older trove forwarding its command line.
		{"old trove's /v1/run", "/v1/run", `{"args":["gc"]}`, []string{`"fd":2`, `"exit":1`}},
		{"unknown operation", "/v1/frobnicate", `{}`, []string{"frobnicate", "version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := hc.Post("http://agent"+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answer := string(b)
			if tc.path == "/v1/run" {
				// The old client shows fd-2 frames as they are and exits with "exit".
				answer = string(b) + decodeRunFrames(t, b)
			}
			for _, w := range tc.want {
				if !strings.Contains(answer, w) {
					t.Errorf("answer %q lacks %q", answer, w)
				}
			}
			if tc.path == "/v1/run" && !strings.Contains(answer, "restart") {
				t.Errorf("answer %q does not say to restart the agent", answer)
			}
		})
	}

	// This trove talking to an agent that serves other operations.
	other := t.TempDir()
	ln, err := net.Listen("unix", agent.SocketPath(other))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := localapi.Connect(ctx, other, storeDir, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = localapi.GC.Remote(ctx, c, localapi.GCRequest{}, nil)
	if err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("an agent without the gc operation: %v, want a hint to restart it", err)
	}
}

// decodeRunFrames is the text of the fd-2 frames of an old /v1/run answer.
func decodeRunFrames(t *testing.T, b []byte) string {
	var out strings.Builder
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var f struct {
			FD   int    `json:"fd"`
			Data []byte `json:"data"`
		}
		if err := json.Unmarshal(line, &f); err != nil {
			t.Fatalf("frame %q: %v", line, err)
		}
		out.Write(f.Data)
	}
	return out.String()
}

// agentWithHello starts an agent in a new home holding helloPath.
func agentWithHello(t *testing.T) (home string, tgt localapi.Target) {
	t.Helper()
	home = t.TempDir()
	startAgent(t, home)
	tgt = localapi.Target{Home: home, StoreDir: storeDir}
	if _, err := localapi.Call(context.Background(), tgt, localapi.Add, localapi.AddRequest{Paths: []string{helloFile(t)}}, nil); err != nil {
		t.Fatal(err)
	}
	return home, tgt
}

// Without an agent, id gives the addresses an agent would listen on:
// config.toml's, else the defaults.
func TestIDWithoutAgentListsConfiguredAddrs(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	e := localapi.Open(home, storeDir, nil)
	defer e.Close()
	def, err := localapi.ID.Local(ctx, e, localapi.IDRequest{}, nil)
	if err != nil || len(def.Addrs) == 0 {
		t.Fatalf("default addresses: %+v %v", def, err)
	}
	if err := os.WriteFile(agent.ConfigPath(home), []byte("[agent]\nlisten = [\"/ip4/127.0.0.1/tcp/4999\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := localapi.ID.Local(ctx, e, localapi.IDRequest{}, nil)
	if want := "/ip4/127.0.0.1/tcp/4999/p2p/" + r.ID; err != nil || r.ID != def.ID || len(r.Addrs) != 1 || r.Addrs[0] != want {
		t.Fatalf("with config.toml: %+v %v, want the one address %s", r, err, want)
	}
}

// What a running agent cannot do for a caller it refuses saying why: a
// store dir other than its store's, the other backend (--store), a
// bundle on the caller's standard input.
func TestAgentRefusesWhatItCannotServe(t *testing.T) {
	ctx := context.Background()
	home, _ := agentWithHello(t)
	other, err := localapi.Connect(ctx, home, "/other/store", localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localapi.RootList.Remote(ctx, other, localapi.RootListRequest{}, nil); err == nil || !strings.Contains(err.Error(), "uses store dir /nix/store, not /other/store") {
		t.Fatalf("root list for another store dir: %v", err)
	}
	nixKind := localapi.Target{Home: home, StoreDir: storeDir, Kind: store.Kind{Backend: store.BackendNix}, Log: slog.New(slog.DiscardHandler)}
	if _, err := localapi.Call(ctx, nixKind, localapi.RootList, localapi.RootListRequest{}, nil); err == nil || !strings.Contains(err.Error(), "works on the embedded store, not the nix store") {
		t.Fatalf("root list asking for Nix's store of an agent on the embedded one: %v", err)
	}
	c, err := localapi.Connect(ctx, home, storeDir, localapi.AgentStartWait, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = localapi.ImportBundle.Remote(ctx, c, localapi.ImportBundleRequest{File: "-", Stdin: strings.NewReader("bundle")}, nil)
	if err == nil || !localapi.IsUsage(err) || !strings.Contains(err.Error(), "standard input") {
		t.Fatalf("bundle import from stdin through the agent: %v", err)
	}
}

// A running agent announces what it publishes; without one the
// generation is only recorded, and the response says which happened
// (the CLI tells the user that peers get it when they ask).
func TestPublishSaysWhetherAnnounced(t *testing.T) {
	ctx := context.Background()
	for _, withAgent := range []bool{false, true} {
		home := t.TempDir()
		if withAgent {
			startAgent(t, home)
		}
		tgt := localapi.Target{Home: home, StoreDir: storeDir}
		if _, err := localapi.Call(ctx, tgt, localapi.Add, localapi.AddRequest{Paths: []string{helloFile(t)}}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := localapi.Call(ctx, tgt, localapi.GenerateKey, localapi.GenerateKeyRequest{Name: "k-1"}, nil); err != nil {
			t.Fatal(err)
		}
		r, err := localapi.Call(ctx, tgt, localapi.Publish, localapi.PublishRequest{Name: "hello", Root: helloPath}, nil)
		if err != nil || r.Generation != 1 || r.Key != "k-1" || r.Announced != withAgent {
			t.Fatalf("publish (agent running: %v): %+v %v", withAgent, r, err)
		}
	}
}
