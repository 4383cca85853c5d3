package testnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// BinaryEnv names an environment variable holding a trove binary to use
// in namespace mode instead of building one.
const BinaryEnv = "TROVE_TESTNET_BIN"

// CPUProfileEnv names an environment variable holding a directory: each
// agent a LAN starts writes a CPU profile there (agentN.TIME.prof), and
// the LAN stops its agents with SIGTERM so that they do. `go tool pprof
// trove DIR/*.prof` then shows where a room's CPU went.
const CPUProfileEnv = "TROVE_LAN_CPUPROFILE"

// The trove binary is built once per test process into binDir, a directory
// named for the process, removed by RemoveBuild (or by the next process that
// builds, once this one has exited).
var (
	buildOnce sync.Once
	binPath   string
	binDir    string
	buildErr  error
)

const binDirPrefix = "trove-testnet-bin-"

// troveBinary returns the path of a trove binary built from this module.
func troveBinary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			binPath = p
			return
		}
		sweepBuilds()
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		out := filepath.Join(dir, "trove")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/trove")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building trove (go build ./cmd/trove in %s): %v\n%s", root, err, b)
			return
		}
		binPath = out
	})
	return binPath, buildErr
}

// moduleRoot finds the root of the trove module: from `go env GOMOD` in
// the working directory, else from this source file's location.
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		gomod := strings.TrimSpace(string(out))
		if gomod != "" && gomod != os.DevNull {
			if b, err := os.ReadFile(gomod); err == nil && strings.Contains(string(b), "module github.com/trove-p2p/trove\n") {
				return filepath.Dir(gomod), nil
			}
		}
	}
	_, file, _, ok := runtime.Caller(0)
	if ok && filepath.IsAbs(file) {
		root := filepath.Dir(filepath.Dir(file))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	return "", errors.New("cannot find the trove module's root to build cmd/trove; set " + BinaryEnv)
}

// sweepBuilds removes binaries built by test processes that have exited.
func sweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), binDirPrefix), "-")
		if n, err := strconv.Atoi(pid); err == nil && !alive(n) {
			os.RemoveAll(d)
		}
	}
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	return pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// RemoveBuild removes the trove binary this process built for namespace
// mode, if it built one. Call it once no LAN will start again (nettest.Main
// does, when a package's tests end).
func RemoveBuild() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
