package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
)

// Env is what scenarios share in one run.
type Env struct {
	Ctx   context.Context
	Dir   string    // scratch space, removed after the run
	Quick bool      // reduced sizes, for CI
	Trove string    // the trove binary to run as the syncing process
	Log   io.Writer // progress notes for people
	// SimRooms, SimClosureMiB and SimPaths replace the sim's rooms,
	// closure size and paths when set (Options).
	SimRooms      []int
	SimClosureMiB int
	SimPaths      int
	FanoutMbit    int // the fanout's links, when not 100 Mbit/s (Options)

	nixKey, nixPub string
	fixtures       map[string]*Fixture

	// For the plots.
	swarmRates  map[int]float64
	fanoutDone  []time.Duration // each follower's time in the room, sorted
	fanoutOne   time.Duration   // one follower alone
	simRuns     []simRun
	simNarBytes int64
}

func (e *Env) logf(format string, a ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", a...)
	}
}

// closureSpec is the size of the main fixture: ≈1 GiB in ≈100 paths, or a
// reduced one with --quick.
func (e *Env) closureSpec(salt string) FixtureSpec {
	if e.Quick {
		return FixtureSpec{Paths: 30, Bytes: 128 << 20, Salt: salt}
	}
	return FixtureSpec{Paths: 100, Bytes: 1 << 30, Salt: salt}
}

// fixture builds (once per run) the signed fixture for salt.
func (e *Env) fixture(salt string) (*Fixture, error) {
	if f, ok := e.fixtures[salt]; ok {
		return f, nil
	}
	if e.fixtures == nil {
		e.fixtures = map[string]*Fixture{}
	}
	if e.nixKey == "" {
		sk, pk, err := NixKey(e.Ctx, e.Dir)
		if err != nil {
			return nil, err
		}
		e.nixKey, e.nixPub = sk, pk
	}
	spec := e.closureSpec(salt)
	e.logf("building the fixture closure with nix-build (%d paths, %s)...", spec.Paths, human(spec.Bytes))
	f, err := BuildFixture(e.Ctx, filepath.Join(e.Dir, "fixture"), spec, e.nixKey)
	if err != nil {
		return nil, err
	}
	e.fixtures[salt] = f
	return f, nil
}

// seeder is an in-process agent holding closures imported from Nix.
type seeder struct {
	ag   *agent.Agent
	home string
	addr string // multiaddr with /p2p/
}

func (e *Env) startSeeder(name string, tops ...string) (*seeder, error) {
	return e.startSeederOn(name, store.Kind{}, tops...)
}

// seederHome is where startSeederOn(name, ...) keeps its home.
func (e *Env) seederHome(name string) string { return filepath.Join(e.Dir, "seeder-"+name) }

// startSeederOn starts a seeder on the store kind names (trove's own for
// the zero Kind), importing tops from the machine's Nix into it.
func (e *Env) startSeederOn(name string, kind store.Kind, tops ...string) (*seeder, error) {
	home := e.seederHome(name)
	ag, err := agent.Start(e.Ctx, agent.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Kind: kind})
	if err != nil {
		return nil, err
	}
	if len(tops) > 0 {
		if _, err := ag.Store.ImportNix(e.Ctx, tops, nil); err != nil {
			ag.Close()
			return nil, err
		}
	}
	return &seeder{ag: ag, home: home, addr: ag.Node.Host().Addrs()[0].String() + "/p2p/" + ag.Node.ID().String()}, nil
}

// syncHome prepares a fresh trove home that trusts the fixture key and is
// allowed by the seeders.
func (e *Env) syncHome(name string, seeders ...*seeder) (string, error) {
	return e.syncHomeOn(name, nil, seeders...)
}

// syncHomeOn is syncHome for a home made with the global flags global
// (e.g. --store nix --nix-store local?root=DIR).
func (e *Env) syncHomeOn(name string, global []string, seeders ...*seeder) (string, error) {
	home := filepath.Join(e.Dir, "sync-"+name)
	os.RemoveAll(home)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte("[agent]\nmdns = false\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := runCmd(e.Ctx, os.Environ(), e.Trove, troveArgs(home, global, "trust", "add", e.nixPub)...); err != nil {
		return "", err
	}
	out, err := runCmd(e.Ctx, os.Environ(), e.Trove, troveArgs(home, global, "id", "--json")...)
	if err != nil {
		return "", err
	}
	var id struct{ ID string }
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		return "", err
	}
	for _, s := range seeders {
		pid, err := peerID(id.ID)
		if err != nil {
			return "", err
		}
		if err := s.ag.Allow(pid, name); err != nil {
			return "", err
		}
	}
	return home, nil
}

// syncRun is one `trove sync` process.
type syncRun struct {
	Wall   time.Duration
	MaxRSS int64 // bytes
	Report struct {
		PathsFetched int   `json:"pathsFetched"`
		BytesFetched int64 `json:"bytesFetched"`
		BytesReused  int64 `json:"bytesReusedLocally"`
		NarBytes     int64 `json:"narBytes"`
	}
}

// troveSync runs `trove sync --json` of top in home from the seeders, as a
// separate process (so its wall time and peak RSS are its own).
func (e *Env) troveSync(home, top string, seeders ...*seeder) (*syncRun, error) {
	return e.troveSyncOn(home, nil, top, seeders...)
}

// troveArgs are trove's arguments for a command in home with the global
// flags global.
func troveArgs(home string, global []string, cmd ...string) []string {
	return append(append([]string{"--home", home}, global...), cmd...)
}

// troveSyncOn is troveSync with the global flags global; flags of sync
// itself may follow them, after "sync" (global = [..., "sync", FLAGS...]).
func (e *Env) troveSyncOn(home string, global []string, top string, seeders ...*seeder) (*syncRun, error) {
	syncArgs := []string{"sync", "--json"}
	if i := slices.Index(global, "sync"); i >= 0 {
		global, syncArgs = global[:i], append(syncArgs, global[i+1:]...)
	}
	args := troveArgs(home, global, syncArgs...)
	if os.Getenv("TROVE_BENCH_VERBOSE") != "" {
		args = append(args, "-v")
	}
	if p := os.Getenv("TROVE_BENCH_CPUPROFILE"); p != "" {
		// A %s in it is the home's name: one profile per sync.
		if strings.Contains(p, "%s") {
			p = fmt.Sprintf(p, filepath.Base(home))
		}
		args = append(args, "--cpuprofile", p)
	}
	for _, s := range seeders {
		args = append(args, "--from", s.addr)
	}
	args = append(args, top)
	dropCaches()
	cmd := exec.CommandContext(e.Ctx, e.Trove, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := &syncRun{Wall: time.Since(start)}
	if err != nil {
		return nil, fmt.Errorf("trove sync: %v: %s", err, errb.String())
	}
	if os.Getenv("TROVE_BENCH_VERBOSE") != "" {
		e.logf("%s", errb.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSS = ru.Maxrss * 1024
	}
	if err := json.Unmarshal(out.Bytes(), &r.Report); err != nil {
		return nil, fmt.Errorf("trove sync --json: %v: %q", err, out.String())
	}
	return r, nil
}

// serveCache serves a binary cache directory over HTTP on loopback with
// Go's file server (sendfile), and returns its URL and a stop function.
func serveCache(dir string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	url, stop := serveCacheOn(ln, dir)
	return url, stop, nil
}

// serveCacheOn serves dir on ln, wherever ln listens.
func serveCacheOn(ln net.Listener, dir string) (string, func()) {
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }
}

// nixCopy runs the real `nix copy --from URL --to local?root=DIR top`,
// with signature checking against the fixture key.
func (e *Env) nixCopy(url, top string) (time.Duration, error) {
	root := filepath.Join(e.Dir, "nix-root")
	removeAll(root)
	cache := filepath.Join(e.Dir, "nix-xdg")
	removeAll(cache)
	env := append(os.Environ(), "XDG_CACHE_HOME="+cache)
	dropCaches()
	start := time.Now()
	_, err := runCmd(e.Ctx, env, "nix", "--extra-experimental-features", "nix-command", "copy",
		"--from", url, "--to", "local?root="+root, "--option", "trusted-public-keys", e.nixPub, top)
	d := time.Since(start)
	removeAll(root)
	return d, err
}

// removeAll removes a tree even with read-only directories (Nix stores).
func removeAll(dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	os.RemoveAll(dir)
}

// dropCaches flushes dirty pages so one measurement does not pay for the
// previous one's writeback.
func dropCaches() { syscall.Sync() }

func human(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if f < 1024 || u == "GiB" {
			return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0"), ".") + " " + u
		}
		f /= 1024
	}
	return ""
}

// fanoutRate is the fanout's links in bits per second: 100 Mbit/s unless
// chosen (Options.FanoutMbit).
func (e *Env) fanoutRate() int64 {
	if e.FanoutMbit > 0 {
		return int64(e.FanoutMbit) * 1_000_000
	}
	return mbit100
}
