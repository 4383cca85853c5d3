package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	troveBinOnce sync.Once
	troveBin     string
	troveBinErr  error
)

// buildTrove builds the trove binary once per test process.
func buildTrove(t testing.TB) string {
	troveBinOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		dir, err := os.MkdirTemp("", "trove-bench-bin")
		if err != nil {
			troveBinErr = err
			return
		}
		troveBin = filepath.Join(dir, "trove")
		cmd := exec.Command("go", "build", "-o", troveBin, "./cmd/trove")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			troveBinErr = err
			t.Logf("%s", out)
		}
	})
	if troveBinErr != nil {
		t.Fatal(troveBinErr)
	}
	return troveBin
}

func testEnv(t testing.TB, quick bool) *Env {
	return &Env{Ctx: context.Background(), Dir: t.TempDir(), Quick: quick, Trove: buildTrove(t), Log: testLog{t}}
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) { l.t.Logf("%s", p); return len(p), nil }

// testScenarios are the scenarios TestQuickBench runs: all but nix (which
// adds some 20 s) unless TROVE_BENCH_NIX or TROVE_BENCH_FULL is set, and
// but sim, which TestSimQuick runs.
func testScenarios() []string {
	if os.Getenv("TROVE_BENCH_NIX") != "" || os.Getenv("TROVE_BENCH_FULL") != "" {
		return nil
	}
	var names []string
	for _, s := range Scenarios {
		if s.Name != "nix" && s.Name != "sim" {
			names = append(names, s.Name)
		}
	}
	return names
}

// TestQuickBench runs every scenario at --quick size (the LAN ones only as
// root) and requires each to produce figures rather than fail.
func TestQuickBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark scenarios; skipped with -short")
	}
	quick := os.Getenv("TROVE_BENCH_FULL") == ""
	tab, err := Run(context.Background(), Options{Quick: quick, Names: testScenarios(), Trove: buildTrove(t), Log: testLog{t}, PlotDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	tab.Print(&b)
	t.Logf("\n%s", b.String())
	for _, r := range tab.Results {
		if strings.HasPrefix(r.Skipped, "failed") {
			// A kernel without the tc qdiscs cannot shape links: that is
			// the machine, not trove.
			if (r.Scenario == "swarm" || r.Scenario == "fanout") && strings.Contains(r.Skipped, "qdisc") {
				t.Logf("%s: %s", r.Scenario, r.Skipped)
				continue
			}
			t.Errorf("%s: %s", r.Scenario, r.Skipped)
		}
		if r.Skipped == "" && r.Trove <= 0 {
			t.Errorf("%s: no figure: %+v", r.Scenario, r)
		}
	}
	// Where the fanout's room floor ran, its CPU is compared with the
	// room's: this machine has /proc/stat.
	hasRow := func(suffix string) *Result {
		for i, r := range tab.Results {
			if r.Scenario == "fanout" && strings.HasSuffix(r.Metric, suffix) {
				return &tab.Results[i]
			}
		}
		return nil
	}
	if hasRow("median done ÷ the room floor's") != nil {
		if r := hasRow("CPU ÷ the room floor's"); r == nil || r.Ratio <= 0 || r.Baseline <= 0 {
			t.Errorf("fanout: no CPU over the room floor's: %+v", r)
		}
	}
}
