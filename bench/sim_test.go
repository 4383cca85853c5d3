package bench

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestSimQuick runs the sim scenario at --quick size: small rooms of real
// stores, nodes and fetchers over mocknet.
func TestSimQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a simulated room; skipped with -short")
	}
	e := &Env{Ctx: context.Background(), Dir: t.TempDir(), Quick: os.Getenv("TROVE_BENCH_FULL") == "", Log: testLog{t}}
	rs, err := runSim(e)
	if err != nil {
		t.Fatal(err)
	}
	tab := &Table{Results: rs}
	var b strings.Builder
	tab.Print(&b)
	t.Logf("\n%s", b.String())
}
