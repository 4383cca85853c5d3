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

// slowRate is the slow link of the compress scenario: a home uplink.
const slowRate = 20_000_000

// compress: a closure of real source files (a copy of Go's runtime
// source, about 19 MB of text; its net package in --quick) synced over a
// 20 Mbit/s link, once asking for uncompressed chunks (--compress never)
// and once as trove decides (auto, which compresses on a link this slow).
// Reports the time with compression over the time without, and what
// crossed the seeder's link each time.
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
		if err := lan.Shape(0, testnet.Link{Rate: slowRate}); err != nil {
			return nil, err
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
		e.logf("compress: %s over 20 Mbit/s: %.1fs and %s uncompressed, %.1fs and %s compressed",
			human(size), plain.Seconds(), human(plainBytes), auto.Seconds(), human(autoBytes))
		r := ratioRow(Result{Scenario: "compress",
			Metric: fmt.Sprintf("sync of Go's %s source (%s NAR) over 20 Mbit/s: compressed ÷ uncompressed", filepath.Base(src), human(size)),
			Unit:   "s", Trove: auto.Seconds(), Baseline: plain.Seconds(), BaselineName: "trove --compress never",
			Target: "≤ 0.6×", Note: fmt.Sprintf("the seeder's link carried %s, against %s uncompressed", human(autoBytes), human(plainBytes))}, 0.6, false)
		return []Result{r}, nil
	})
	if skip != "" {
		return []Result{{Scenario: "compress", Skipped: skip}}, nil
	}
	return res, err
}
