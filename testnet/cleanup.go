package testnet

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The LANs of this process, torn down if it is interrupted: neither
// t.Cleanup nor a caller's deferred Close runs on SIGINT or SIGTERM.
var (
	liveMu      sync.Mutex
	live        = map[*LAN]bool{}
	signalsOnce sync.Once
)

func register(l *LAN) {
	signalsOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go onSignal(ch)
	})
	liveMu.Lock()
	live[l] = true
	liveMu.Unlock()
}

func unregister(l *LAN) {
	liveMu.Lock()
	delete(live, l)
	liveMu.Unlock()
}

// onSignal removes every live LAN, its directory and the built binary,
// then dies of the signal as it would have without the handler.
func onSignal(ch chan os.Signal) {
	sig := (<-ch).(syscall.Signal)
	liveMu.Lock()
	var lans []*LAN
	for l := range live {
		lans = append(lans, l)
	}
	liveMu.Unlock()
	for _, l := range lans {
		l.teardown()
		// The test's whole temp directory: testing will not remove it now.
		dir := l.dir
		if parent := filepath.Dir(dir); filepath.Dir(parent) == filepath.Clean(os.TempDir()) {
			dir = parent
		}
		os.RemoveAll(dir)
	}
	RemoveBuild()
	signal.Reset(sig)
	syscall.Kill(os.Getpid(), sig)
	// Still here: the signal was ignored when the process started (as in
	// a background job), and Reset ignores it again. The LANs are gone, so
	// the tests cannot go on.
	os.Exit(128 + int(sig))
}

// ourNetns matches the namespaces testnet creates: trove-<pid>-<run>-<i|br>.
var ourNetns = regexp.MustCompile(`^trove-([0-9]+)-[0-9a-f]{6}-(br|[0-9]+)$`)

// sweepNamespaces deletes the namespaces (and what runs in them) that
// testnet created in processes that no longer exist, such as a test binary
// killed by a timeout.
func sweepNamespaces() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		m := ourNetns.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if pid, err := strconv.Atoi(m[1]); err == nil && !alive(pid) {
			deleteNetns(name)
		}
	}
}
