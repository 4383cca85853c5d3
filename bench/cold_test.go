package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

func TestColdQuick(t *testing.T) {
	if !HaveNix() {
		t.Skip("nix not installed")
	}
	quick := os.Getenv("TROVE_BENCH_FULL") == ""
	rs, err := runCold(testEnv(t, quick))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		t.Logf("%+v", r)
	}
}
