package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/trove-p2p/trove/testnet"
)

// slowRate and slowDelay are the slow link of the compress scenario: a
// home uplink, across a country.
const (
	slowRate  = 20_000_000
	slowDelay = 40 * time.Millisecond
)

// nixCopyOver times the real `nix copy` of src (added to this machine's
// Nix store) from a zstd-compressed binary cache of it, served from LAN
// agent 0's namespace, into an empty store in agent 1's, across the
// shaped link; and counts what crossed agent 0's link.
func (e *Env) nixCopyOver(lan *testnet.LAN, src string) (time.Duration, int64, error) {
	path, err := runCmd(e.Ctx, nixEnv(e.Dir), "nix-store", "--add", src)
	if err != nil {
		return 0, 0, err
	}
	cache := filepath.Join(e.Dir, "cache-zstd")
	removeAll(cache)
	defer removeAll(cache)
	if _, err := runCmd(e.Ctx, nixEnv(e.Dir), "nix", "copy", "--to", "file://"+cache+"?compression=zstd", path); err != nil {
		return 0, 0, err
	}
	ln, err := lan.Listen(0, lan.IP(0)+":0")
	if err != nil {
		return 0, 0, err
	}
	url, stop := serveCacheOn(ln, cache)
	defer stop()
	root := filepath.Join(e.Dir, "nix-root-slow")
	removeAll(root)
	defer removeAll(root)
	_, tx0, err := lan.LinkBytes(0)
	if err != nil {
		return 0, 0, err
	}
	cmd := lan.Command(e.Ctx, 1, "nix", "copy", "--no-check-sigs", "--from", url, "--to", "local?root="+root, path)
	cmd.Env = append(nixEnv(e.Dir), "XDG_CACHE_HOME="+filepath.Join(e.Dir, "nix-xdg-slow"))
	removeAll(filepath.Join(e.Dir, "nix-xdg-slow"))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("nix copy over the slow link: %v: %s", err, out)
	}
	took := time.Since(start)
	_, tx1, err := lan.LinkBytes(0)
	return took, tx1 - tx0, err
}

// compress: a closure of real source files (a copy of Go's runtime
// source, about 19 MB of text; its net package in --quick) synced over a
// 20 Mbit/s link with 40 ms of delay each way (the delay where the kernel
// has netem), once asking for uncompressed chunks (--compress never) and
// once as trove decides (auto, which compresses on a link this slow); and,
// over the same link, the real `nix copy` from a zstd-compressed binary
// cache of the same path served by the seeder's machine. Reports the
// time with compression over the time without, and over nix copy's.
func runCompress(e *Env) ([]Result, error) {
	src := filepath.Join(runtime.GOROOT(), "src", "runtime")
	if e.Quick {
		src = filepath.Join(runtime.GOROOT(), "src", "net")
	}
	if _, err := os.Stat(src); err != nil {
		return []Result{{Scenario: "compress", Skipped: "no Go source tree at " + src}}, nil
	}
	res, skip, err := e.withLAN(2, func(lan *testnet.LAN) ([]Result, error) {
		out, err := lan.Trove(0, "add", src)
		if err != nil {
			return nil, err
		}
		path := strings.TrimSpace(out)
		nar, err := lan.Trove(0, "path-info", "-S", path)
		if err != nil {
			return nil, err
		}
		var size int64
		if f := strings.Fields(nar); len(f) == 2 {
			fmt.Sscan(f[1], &size)
		}
		link, linkName := testnet.Link{Rate: slowRate, Delay: slowDelay}, "20 Mbit/s, 40 ms"
		if err := lan.Shape(0, link); err != nil {
			// No netem in this kernel: the rate alone.
			e.logf("compress: no delay (%v)", err)
			link, linkName = testnet.Link{Rate: slowRate}, "20 Mbit/s"
			if err := lan.Shape(0, link); err != nil {
				return nil, err
			}
		}
		if _, err := lan.WaitConnected(1); err != nil {
			return nil, err
		}
		run := func(mode string) (time.Duration, int64, error) {
			_, tx0, err := lan.LinkBytes(0)
			if err != nil {
				return 0, 0, err
			}
			start := time.Now()
			if _, err := lan.Trove(1, "sync", "--compress", mode, path); err != nil {
				return 0, 0, err
			}
			took := time.Since(start)
			_, tx1, err := lan.LinkBytes(0)
			if err != nil {
				return 0, 0, err
			}
			if _, err := lan.Trove(1, "gc"); err != nil {
				return 0, 0, err
			}
			return took, tx1 - tx0, nil
		}
		plain, plainBytes, err := run("never")
		if err != nil {
			return nil, err
		}
		auto, autoBytes, err := run("auto")
		if err != nil {
			return nil, err
		}
		e.logf("compress: %s over %s: %.1fs and %s uncompressed, %.1fs and %s compressed",
			human(size), linkName, plain.Seconds(), human(plainBytes), auto.Seconds(), human(autoBytes))
		rows := []Result{ratioRow(Result{Scenario: "compress",
			Metric: fmt.Sprintf("sync of Go's %s source (%s NAR) over %s: compressed ÷ uncompressed", filepath.Base(src), human(size), linkName),
			Unit:   "s", Trove: auto.Seconds(), Baseline: plain.Seconds(), BaselineName: "trove --compress never",
			Target: "≤ 0.6×", Note: fmt.Sprintf("the seeder's link carried %s, against %s uncompressed", human(autoBytes), human(plainBytes))}, 0.6, false)}
		if !HaveNix() {
			return append(rows, Result{Scenario: "compress", Skipped: "nix copy baseline: Nix is not installed"}), nil
		}
		nixTook, nixBytes, err := e.nixCopyOver(lan, src)
		if err != nil {
			return nil, err
		}
		e.logf("compress: nix copy from a zstd cache over %s: %.1fs and %s", linkName, nixTook.Seconds(), human(nixBytes))
		return append(rows, ratioRow(Result{Scenario: "compress",
			Metric: fmt.Sprintf("the same over %s: trove (auto) ÷ nix copy from a zstd binary cache", linkName),
			Unit:   "s", Trove: auto.Seconds(), Baseline: nixTook.Seconds(), BaselineName: "nix copy --from http (zstd cache)",
			Target: "≤ 1.0×", Note: fmt.Sprintf("nix copy's link carried %s", human(nixBytes))}, 1.0, false)), nil
	})
	if skip != "" {
		return []Result{{Scenario: "compress", Skipped: skip}}, nil
	}
	return res, err
}
