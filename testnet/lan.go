package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/p2p"
)

// RequireEnv, set to 1, makes namespace mode fail instead of skipping when
// it cannot run (not root, no iproute2), as CI does.
const RequireEnv = "TROVE_REQUIRE_NETNS"

// LAN is a network of `trove agent` processes, each in its own network
// namespace, joined by a bridge in a namespace of its own: like machines on
// one LAN switch. Namespace and interface names carry the test process's
// ID and a random run ID, so parallel runs do not collide.
type LAN struct {
	cfg    config
	bin    string
	dir    string
	run    string // random run ID, 6 hex digits
	subnet string // "10.77.<k>", k random per run
	bridge string // the bridge's namespace
	nodes  []*lanNode

	mu      sync.Mutex // guards the fields below and the nodes' processes
	made    []string   // namespaces created, to delete
	parts   map[[2]int]bool
	started time.Time // the agents were launched
	ready   time.Time // they all answered on their control sockets
	down    bool
}

type lanNode struct {
	ns   string // its namespace
	veth string // its link's end on the bridge
	eth  string // its link's end in its namespace
	addr string // its IPv4 address
	home string
	log  string // file receiving the agent's stdout and stderr
	id   string // peer ID

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// UnavailableError says why namespace mode cannot run here (not root, or
// no iproute2). Tests skip on it unless TROVE_REQUIRE_NETNS=1.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string {
	return "needs root and iproute2 (ip): " + e.Reason
}

// CheckNetns returns an *UnavailableError unless this process can create
// network namespaces (runs as root, with iproute2's ip on PATH).
func CheckNetns() error {
	if os.Geteuid() != 0 {
		return &UnavailableError{"not running as root"}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return &UnavailableError{"ip not found"}
	}
	return nil
}

// NewLAN builds the trove binary (once per process, unless BinaryEnv names
// one), creates the LAN under dir and starts n agents on it, listening on
// TCP and QUIC port 4807 with mDNS on and no static peers. Their homes are
// paired with `trove peer allow` beforehand (see WithoutPairing). NewLAN
// returns once every agent answers on its control socket; use
// WaitConnected to wait for discovery. Without root or iproute2 it returns
// an *UnavailableError. The caller must Close the LAN; when NewLAN fails,
// it has removed what it made.
func NewLAN(dir string, n int, opts ...Option) (*LAN, error) {
	if n < 1 || n > 250 {
		return nil, fmt.Errorf("testnet: a LAN holds 1 to 250 agents, not %d", n)
	}
	if err := CheckNetns(); err != nil {
		return nil, err
	}
	bin, err := troveBinary()
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	id := rand.Uint32()
	run := fmt.Sprintf("%06x", id&0xffffff)
	pfx := fmt.Sprintf("trove-%d-%s-", os.Getpid(), run)
	l := &LAN{
		cfg: newConfig(opts), bin: bin, dir: dir, run: run,
		subnet: fmt.Sprintf("10.77.%d", id>>24), bridge: pfx + "br", parts: map[[2]int]bool{},
	}
	for i := range n {
		l.nodes = append(l.nodes, &lanNode{
			ns: pfx + strconv.Itoa(i), veth: fmt.Sprintf("v%s-%d", run, i), eth: fmt.Sprintf("e%s-%d", run, i),
			addr: fmt.Sprintf("%s.%d", l.subnet, i+1),
			home: filepath.Join(l.dir, "a"+strconv.Itoa(i)), log: filepath.Join(l.dir, "agent"+strconv.Itoa(i)+".log"),
		})
	}
	register(l)
	if err := l.launch(); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// launch builds the LAN and starts its agents.
func (l *LAN) launch() error {
	sweepNamespaces()
	if err := l.build(); err != nil {
		return fmt.Errorf("testnet: building the LAN: %w", err)
	}
	if l.cfg.link != nil {
		for i := range l.nodes {
			if err := l.Shape(i, *l.cfg.link); err != nil {
				return err
			}
		}
	}
	if err := l.pair(); err != nil {
		return fmt.Errorf("testnet: pairing the agents: %w", err)
	}
	all := make([]int, len(l.nodes))
	for i := range all {
		all[i] = i
	}
	return l.startAndWait("starting", all...)
}

// startAndWait starts agents idx and waits until each answers, recording
// when they were started and ready (Started, Ready).
func (l *LAN) startAndWait(doing string, idx ...int) error {
	for _, i := range idx {
		if err := l.start(i); err != nil {
			return fmt.Errorf("testnet: %s agent %d: %w", doing, i, err)
		}
	}
	l.mu.Lock()
	l.started = time.Now()
	l.mu.Unlock()
	for _, i := range idx {
		if err := l.waitReady(i); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
	}
	l.mu.Lock()
	l.ready = time.Now()
	l.mu.Unlock()
	return nil
}

// ip runs iproute2's ip.
func ip(args ...string) error { return command("ip", args...) }

func command(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// addNetns creates a namespace with its loopback up.
func (l *LAN) addNetns(ns string) error {
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	l.mu.Lock()
	l.made = append(l.made, ns)
	l.mu.Unlock()
	return ip("-n", ns, "link", "set", "lo", "up")
}

// build creates the bridge's namespace and the bridge, and each agent's
// namespace with a veth pair from the bridge into it.
func (l *LAN) build() error {
	br := "tb" + l.run
	if err := l.addNetns(l.bridge); err != nil {
		return err
	}
	if err := ip("-n", l.bridge, "link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	if err := ip("-n", l.bridge, "link", "set", br, "up"); err != nil {
		return err
	}
	for _, nd := range l.nodes {
		steps := [][]string{
			{"-n", l.bridge, "link", "add", nd.veth, "type", "veth", "peer", "name", nd.eth, "netns", nd.ns},
			{"-n", l.bridge, "link", "set", nd.veth, "master", br, "up"},
			{"-n", nd.ns, "addr", "add", nd.addr + "/24", "dev", nd.eth},
			{"-n", nd.ns, "link", "set", nd.eth, "up"},
		}
		if err := l.addNetns(nd.ns); err != nil {
			return err
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				return err
			}
		}
	}
	return nil
}

// pair creates each agent's identity and adds the agents it allows to its
// trust group, all through the CLI.
func (l *LAN) pair() error {
	errs := make([]error, len(l.nodes))
	var wg sync.WaitGroup
	for i, nd := range l.nodes {
		wg.Go(func() {
			out, err := l.Trove(i, "id", "--json")
			if err != nil {
				errs[i] = err
				return
			}
			var id struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal([]byte(out), &id); err != nil || id.ID == "" {
				errs[i] = fmt.Errorf("trove id --json printed %q", out)
			}
			nd.id = id.ID
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i := range l.nodes {
		wg.Go(func() {
			// One home at a time: peer allow rewrites peers.json.
			for j, other := range l.nodes {
				if l.cfg.allows(i, j) {
					if _, err := l.Trove(i, "peer", "allow", other.id, "--name", agentName(j)); err != nil {
						errs[i] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Trove runs a trove command line in agent i's home, from the root
// namespace (commands reach a running agent through its control socket),
// for at most a minute, and returns its standard output.
func (l *LAN) Trove(i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return l.Run(ctx, i, args...)
}

// Run runs a trove command line in agent i's home until it ends or ctx
// does, and returns its standard output, or an error with its standard
// error.
func (l *LAN) Run(ctx context.Context, i int, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, l.bin, append([]string{"--home", l.nodes[i].home}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("agent%d: trove %s: %v: %s", i, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// start launches agent i's process in its namespace.
func (l *LAN) start(i int) error {
	nd := l.nodes[i]
	port := strconv.Itoa(p2p.DefaultPort)
	args := []string{"netns", "exec", nd.ns, l.bin, "--verbose", "--home", nd.home, "agent",
		"--listen", "/ip4/0.0.0.0/tcp/" + port, "--listen", "/ip4/0.0.0.0/udp/" + port + "/quic-v1", "--mdns"}
	if d := os.Getenv(CPUProfileEnv); d != "" {
		args = append(args, "--cpuprofile", filepath.Join(d, fmt.Sprintf("agent%d.%d.prof", i, time.Now().UnixNano())))
	}
	if l.cfg.dht {
		args = append(args, "--dht")
		if i > 0 {
			args = append(args, "--bootstrap", "/ip4/"+l.nodes[0].addr+"/tcp/"+port+"/p2p/"+l.nodes[0].id)
		}
	}
	f, err := os.OpenFile(nd.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the process has its own copy
	fmt.Fprintf(f, "=== testnet: starting agent%d (%s, %s) at %s\n", i, nd.ns, nd.addr, time.Now().Format(time.StampMilli))
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group keeps a terminal's Ctrl-C for us (we kill it);
	// the parent-death signal kills it if this process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("the LAN is shut down")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	nd.cmd, nd.exited = cmd, exited
	return nil
}

// waitReady waits until agent i answers on its control socket.
func (l *LAN) waitReady(i int) error {
	nd := l.nodes[i]
	deadline := time.Now().Add(connectTimeout)
	for {
		if _, err := l.Status(i); err == nil {
			return nil
		}
		select {
		case <-nd.exited:
			return fmt.Errorf("agent %d exited at start (%v); its log:\n%s", i, nd.cmd.ProcessState, l.logTail(i))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %d did not answer on its control socket in %v; its log:\n%s", i, connectTimeout, l.logTail(i))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogTails is the tail of every agent's log, to show when a scenario fails.
func (l *LAN) LogTails() string {
	var b strings.Builder
	for i, nd := range l.nodes {
		fmt.Fprintf(&b, "testnet: agent%d (%s, %s) log (tail):\n%s\n", i, nd.ns, nd.addr, l.logTail(i))
	}
	return b.String()
}

func (l *LAN) logTail(i int) string {
	b, err := os.ReadFile(l.nodes[i].log)
	if err != nil {
		return err.Error()
	}
	return tailLines(b, logTailLines)
}

// N is the number of agents.
func (l *LAN) N() int { return len(l.nodes) }

// Log is the file holding agent i's standard output and error, across
// restarts.
func (l *LAN) Log(i int) string { return l.nodes[i].log }

// Home is agent i's home directory.
func (l *LAN) Home(i int) string { return l.nodes[i].home }

// ID is agent i's peer ID.
func (l *LAN) ID(i int) string { return l.nodes[i].id }

// Addr is agent i's IPv4 address on the LAN.
func (l *LAN) Addr(i int) string { return l.nodes[i].addr }

// Started is when the agents were last launched: by NewLAN (the last of
// them) or by the latest Restart.
func (l *LAN) Started() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started
}

// Ready is when the agents last launched all answered on their control
// sockets (within 10 ms), so their mDNS was running.
func (l *LAN) Ready() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready
}

// Status is agent i's status, as `trove status --json` prints it (read
// from the same control socket).
func (l *LAN) Status(i int) (*agent.Status, error) {
	c, err := agent.Dial(l.nodes[i].home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Status(ctx)
}

// running reports whether agent i's process runs.
func (l *LAN) running(i int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	nd := l.nodes[i]
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// WaitConnected waits until every running agent has exactly k connected
// peers and returns how long it waited; it gives up after 30 s.
func (l *LAN) WaitConnected(k int) (time.Duration, error) {
	var idx []int
	for i := range l.nodes {
		if l.running(i) {
			idx = append(idx, i)
		}
	}
	return l.wait(k, idx)
}

// WaitPeers waits until agent i has exactly k connected peers.
func (l *LAN) WaitPeers(i, k int) (time.Duration, error) {
	return l.wait(k, []int{i})
}

func (l *LAN) wait(k int, idx []int) (time.Duration, error) {
	start := time.Now()
	for {
		done := true
		for _, i := range idx {
			if st, err := l.Status(i); err != nil || st.PeersConnected != k {
				done = false
				break
			}
		}
		if done {
			return time.Since(start), nil
		}
		if time.Since(start) > connectTimeout {
			return time.Since(start), fmt.Errorf("testnet: agents %v did not reach %d connected peers in %v:\n%s", idx, k, connectTimeout, l.describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describe lists each agent's connected peer count.
func (l *LAN) describe() string {
	var b strings.Builder
	for i, nd := range l.nodes {
		st, err := l.Status(i)
		if err != nil {
			fmt.Fprintf(&b, "  agent%d (%s, %s): %v\n", i, nd.addr, nd.id, err)
			continue
		}
		fmt.Fprintf(&b, "  agent%d (%s, %s): %d connected\n", i, nd.addr, nd.id, st.PeersConnected)
	}
	return b.String()
}

// Kill kills agent i with SIGKILL, as a crash or power loss would.
func (l *LAN) Kill(i int) error {
	if err := l.signal(i, syscall.SIGKILL, 10*time.Second); err != nil {
		return fmt.Errorf("testnet: killing agent %d: %w", i, err)
	}
	return nil
}

// Stop stops agent i cleanly (SIGTERM), killing it if it takes over 10 s;
// it returns an error if the agent did not stop cleanly.
func (l *LAN) Stop(i int) error {
	if err := l.signal(i, syscall.SIGTERM, 10*time.Second); err != nil {
		return errors.Join(fmt.Errorf("testnet: %w", err), l.Kill(i))
	}
	return nil
}

// signal sends sig to agent i's process and waits up to wait for it to exit.
func (l *LAN) signal(i int, sig syscall.Signal, wait time.Duration) error {
	l.mu.Lock()
	nd := l.nodes[i]
	cmd, exited := nd.cmd, nd.exited
	l.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("agent %d did not exit %v after %v", i, wait, sig)
	}
}

// Restart stops agent i if it runs (cleanly) and starts it again in the
// same home and namespace, waiting until it answers. Use Kill first for a
// crash.
func (l *LAN) Restart(i int) error {
	if l.running(i) {
		if err := l.Stop(i); err != nil {
			return err
		}
	}
	return l.startAndWait("restarting", i)
}

// Partition cuts agents i and j off from each other: each one's namespace
// gets a prohibit route to the other's address, so dials fail at once and
// connections between them stall (libp2p notices when its keep-alives
// time out). Multicast still passes, so they may still see each other's
// mDNS announcements.
func (l *LAN) Partition(i, j int) error {
	for _, p := range [][2]int{{i, j}, {j, i}} {
		if err := ip("-n", l.nodes[p[0]].ns, "route", "replace", "prohibit", l.nodes[p[1]].addr+"/32"); err != nil {
			return fmt.Errorf("testnet: partition: %w", err)
		}
	}
	l.mu.Lock()
	l.parts[[2]int{min(i, j), max(i, j)}] = true
	l.mu.Unlock()
	return nil
}

// Heal undoes Partition(i, j).
func (l *LAN) Heal(i, j int) error {
	l.mu.Lock()
	key := [2]int{min(i, j), max(i, j)}
	was := l.parts[key]
	delete(l.parts, key)
	l.mu.Unlock()
	if !was {
		return nil
	}
	for _, p := range [][2]int{{i, j}, {j, i}} {
		if err := ip("-n", l.nodes[p[0]].ns, "route", "del", "prohibit", l.nodes[p[1]].addr+"/32"); err != nil {
			return fmt.Errorf("testnet: heal: %w", err)
		}
	}
	return nil
}

// Shape shapes agent i's link to the bridge in both directions with tc
// (see Link), replacing any earlier shaping; a zero Link removes it. Delay
// and loss need the kernel's netem qdisc (sch_netem).
func (l *LAN) Shape(i int, link Link) error {
	nd := l.nodes[i]
	for _, end := range []struct{ ns, dev string }{{nd.ns, nd.eth}, {l.bridge, nd.veth}} {
		// Deleting the root qdisc of an unshaped link fails harmlessly.
		exec.Command("tc", "-n", end.ns, "qdisc", "del", "dev", end.dev, "root").Run()
		for _, c := range tcCommands(end.dev, link) {
			if err := command("tc", append([]string{"-n", end.ns}, c...)...); err != nil {
				hint := ""
				if slices.Contains(c, "netem") {
					hint = " (delay and loss need the kernel's sch_netem module)"
				}
				return fmt.Errorf("testnet: shaping agent %d's link%s: %w", i, hint, err)
			}
		}
	}
	return nil
}

// Close stops every agent and removes the LAN's namespaces and links (not
// its directory, which the caller owns). Calling it again does nothing.
func (l *LAN) Close() error {
	err := l.teardown()
	unregister(l)
	if err != nil {
		return fmt.Errorf("testnet: removing the LAN: %w", err)
	}
	return nil
}

// teardown kills the agents and deletes the namespaces, once.
func (l *LAN) teardown() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil
	}
	l.down = true
	var errs []error
	for i, nd := range l.nodes {
		if nd.cmd == nil {
			continue
		}
		if os.Getenv(CPUProfileEnv) != "" {
			// Stopped cleanly, each agent writes its profile.
			nd.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-nd.exited:
			case <-time.After(10 * time.Second):
			}
		}
		nd.cmd.Process.Kill()
		select {
		case <-nd.exited:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("agent %d (pid %d) did not die", i, nd.cmd.Process.Pid))
		}
	}
	for _, ns := range l.made {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteNetns kills whatever still runs in a namespace and deletes it,
// which also deletes its links.
func deleteNetns(ns string) error {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return ip("netns", "del", ns)
}

// LinkBytes returns the bytes agent i's link has received and sent so
// far, as its interface in its namespace counts them (headers of every
// layer included): what crossed the wire, not what trove says it sent.
func (l *LAN) LinkBytes(i int) (rx, tx int64, err error) {
	nd := l.nodes[i]
	out, err := exec.Command("ip", "-n", nd.ns, "-s", "-j", "link", "show", "dev", nd.eth).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("testnet: reading agent %d's link counters: %w", i, err)
	}
	var links []struct {
		Stats struct {
			RX struct{ Bytes int64 } `json:"rx"`
			TX struct{ Bytes int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("testnet: reading agent %d's link counters: ip printed %q", i, out)
	}
	return links[0].Stats.RX.Bytes, links[0].Stats.TX.Bytes, nil
}

// IP is agent i's IPv4 address on the LAN.
func (l *LAN) IP(i int) string { return l.nodes[i].addr }

// Command is name run with args in agent i's namespace (as on that
// machine, beside its agent).
func (l *LAN) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.nodes[i].ns, name}, args...)...)
}

// Listen opens a TCP listener on addr in agent i's namespace, for a
// server run by this process (a socket stays in the namespace it was
// made in, whichever thread then uses it).
func (l *LAN) Listen(i int, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	out := make(chan result, 1)
	go func() {
		// This thread enters the namespace and is let go only if it
		// gets back to its own; otherwise it ends with the goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			out <- result{nil, err}
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + l.nodes[i].ns)
		if err != nil {
			out <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			out <- result{nil, fmt.Errorf("entering %s: %w", l.nodes[i].ns, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		out <- result{ln, err}
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-out
	return r.ln, r.err
}

// Dev is the name of agent i's network interface in its namespace.
func (l *LAN) Dev(i int) string { return l.nodes[i].eth }
