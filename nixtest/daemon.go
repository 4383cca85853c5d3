package nixtest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireDaemon is Require for tests that run nix-daemon too.
func RequireDaemon(t testing.TB) {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("nix-daemon"); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal("nix-daemon not found (" + RequireEnv + "=1 is set)")
			return
		}
		t.Skip("nix-daemon not found; install nix-bin to run Nix interop tests")
	}
}

// DaemonConfig is the nix.conf of a daemon StartDaemon runs: no builds
// users, no sandbox, no substituters, any user may connect, and only root
// is trusted (as on a multi-user install). Extra lines may override it.
const DaemonConfig = `build-users-group =
sandbox = false
substituters =
allowed-users = *
trusted-users = root
`

// Daemon is a nix-daemon listening on a socket of its own and acting on
// the chroot store under Root, as the daemon of a multi-user install acts
// on /nix. It ends with the test.
type Daemon struct {
	// Socket is where it listens, in a directory every user may reach.
	Socket string
	// Root is the chroot: the store is Root/nix/store, logically /nix/store.
	Root string
	// StoreURI is "local?root=" + Root.
	StoreURI string

	cmd *exec.Cmd
	log string
}

// StartDaemon runs nix-daemon on the chroot store under root (made if
// missing), configured by DaemonConfig and then conf's lines, and waits
// until it accepts connections. When the test ends (after the cleanups
// registered later, so close clients with t.Cleanup) it waits briefly for
// the daemon's per-connection processes to end, kills those left, kills
// the daemon and removes the socket.
func StartDaemon(t testing.TB, root string, conf ...string) *Daemon {
	t.Helper()
	RequireDaemon(t)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket path is short (108 bytes), and other users must reach it.
	dir, err := os.MkdirTemp("", "trove-nixd-")
	if err == nil && len(dir) > 80 {
		os.Remove(dir)
		dir, err = os.MkdirTemp("/tmp", "trove-nixd-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		Socket:   filepath.Join(dir, "socket"),
		Root:     root,
		StoreURI: "local?root=" + root,
		log:      filepath.Join(t.TempDir(), "nix-daemon.log"),
	}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The daemon opens the store afresh for each connection: on a new
	// store, two first connections at once race to create its database,
	// and one fails with "SQLite database … is busy". Create it first.
	Run(t, "nix-store", "--store", d.StoreURI, "--init")
	confDir := t.TempDir() // no /etc/nix/nix.conf
	cmd := exec.Command("nix-daemon", "--store", d.StoreURI)
	cmd.Env = append(os.Environ(), env(t)...)
	cmd.Env = append(cmd.Env,
		"NIX_CONF_DIR="+confDir,
		"NIX_CONFIG="+DaemonConfig+strings.Join(conf, "\n"),
		"NIX_DAEMON_SOCKET_PATH="+d.Socket,
		"NIX_REMOTE=",
	)
	// A file, not a pipe: the daemon's per-connection processes inherit
	// it, and Wait would wait for them too.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		d.stop(exited)
		if t.Failed() {
			log, _ := os.ReadFile(d.log)
			t.Logf("nix-daemon's log:\n%s", log)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(d.log)
			t.Fatalf("nix-daemon exited: %v\n%s", cmd.ProcessState, log)
		default:
		}
		if fi, err := os.Stat(d.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			// Bound; listening a moment later. This connection's
			// process ends at once, for want of a handshake.
			if c, err := net.Dial("unix", d.Socket); err == nil {
				c.Close()
				return d
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(d.log)
			t.Fatalf("nix-daemon does not listen on %s after 20s\n%s", d.Socket, log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Log returns what the daemon wrote so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// stop ends the daemon's per-connection processes, then the daemon. The
// daemon reaps its children itself, so they go first: after it is gone
// they would be orphans, zombies forever where pid 1 does not reap.
func (d *Daemon) stop(exited chan struct{}) {
	pid := d.cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := children(pid)
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, k := range kids {
				syscall.Kill(k, syscall.SIGKILL)
			}
			deadline = time.Now().Add(5 * time.Second) // once more, for them to be reaped
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.cmd.Process.Kill()
	<-exited
}

// children returns the pids of the processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, k)
		}
	}
	return kids
}

// AsNobodyEnv names the variable set in the environment of a test run by
// RunAsNobody.
const AsNobodyEnv = "TROVE_TEST_AS_NOBODY"

// RunAsNobody runs the test named test of this test binary again, as the
// user nobody, with env added (and AsNobodyEnv=test), and returns its
// output; it fails t if that test fails. The test checks AsNobodyEnv
// first and skips unless it names it. It skips t unless this process is
// root, which alone may run a process as another user.
func RunAsNobody(t testing.TB, test string, env ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running a test as nobody needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	// The test binary's directory is root's alone: run a copy.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "trove-asnobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, filepath.Base(self))
	if err := copyFile(bin, self); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1", "-test.v", "-test.timeout=60s")
	cmd.Dir = "/"
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=/nonexistent",
		"TMPDIR=/tmp",
		AsNobodyEnv + "=" + test,
		RequireEnv + "=" + os.Getenv(RequireEnv),
	}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+test)) {
		t.Fatalf("%s as nobody: %v\n%s", test, err, out)
	}
	return string(out)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// AsNobody reports whether this test is the one RunAsNobody runs.
func AsNobody(test string) bool { return os.Getenv(AsNobodyEnv) == test }
