package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestSimCalibrate(t *testing.T) {
	rooms := os.Getenv("SIMCAL_ROOMS")
	if rooms == "" {
		t.Skip()
	}
	var ns []int
	for _, f := range strings.Split(rooms, ",") {
		n, _ := strconv.Atoi(f)
		ns = append(ns, n)
	}
	rate, _ := strconv.ParseFloat(os.Getenv("SIMCAL_RATE"), 64)
	mib, _ := strconv.Atoi(os.Getenv("SIMCAL_MIB"))
	paths, _ := strconv.Atoi(os.Getenv("SIMCAL_PATHS"))
	deg, _ := strconv.Atoi(os.Getenv("SIMCAL_DEG"))
	e := &Env{Ctx: context.Background(), Dir: t.TempDir(), Log: testLog{t}}
	rs, err := e.runSimSpec(simSpec{Rooms: ns, Closure: FixtureSpec{Paths: paths, Bytes: int64(mib) << 20, Salt: "sim"}, Rate: rate * 1024, Degree: deg, Cap: capOr(os.Getenv("SIMCAL_CAP"))})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	(&Table{Results: rs}).Print(&b)
	t.Logf("\n%s", b.String())
}

func capOr(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 10
	}
	return f
}
