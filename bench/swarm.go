package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/trove-p2p/trove/testnet"
)

// lanTB adapts testnet's TB to a benchmark run: failures become errors.
type lanTB struct {
	e      *Env
	dir    string
	fail   error
	skip   string
	clean  []func()
	failed bool
}

type lanAbort struct{}

func (t *lanTB) Helper()                   {}
func (t *lanTB) Cleanup(f func())          { t.clean = append(t.clean, f) }
func (t *lanTB) Failed() bool              { return t.failed }
func (t *lanTB) Logf(f string, a ...any)   { t.e.logf(f, a...) }
func (t *lanTB) Errorf(f string, a ...any) { t.failed = true; t.fail = fmt.Errorf(f, a...) }
func (t *lanTB) Fatalf(f string, a ...any) { t.Errorf(f, a...); panic(lanAbort{}) }
func (t *lanTB) Skipf(f string, a ...any)  { t.skip = fmt.Sprintf(f, a...); panic(lanAbort{}) }
func (t *lanTB) TempDir() string           { d, _ := os.MkdirTemp(t.dir, "lan"); return d }
func (t *lanTB) done() {
	for i := len(t.clean) - 1; i >= 0; i-- {
		t.clean[i]()
	}
}

// withLAN runs fn with a LAN of n agent processes in network namespaces,
// turning testnet's failures and skips into an error or a skip note.
func (e *Env) withLAN(n int, fn func(*testnet.LAN) ([]Result, error)) (res []Result, skip string, err error) {
	if os.Geteuid() != 0 {
		return nil, "needs root (network namespaces)", nil
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, "needs iproute2 (ip)", nil
	}
	os.Setenv(testnet.BinaryEnv, e.Trove)
	t := &lanTB{e: e, dir: e.Dir}
	defer t.done()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(lanAbort); !ok {
				panic(r)
			}
			if t.skip != "" {
				skip = t.skip
			}
			err = t.fail
		}
	}()
	lan := testnet.StartLAN(t, n)
	res, err = fn(lan)
	if err == nil && t.fail != nil {
		err = t.fail
	}
	return res, "", err
}

func (e *Env) lanSpec() FixtureSpec {
	if e.Quick {
		return FixtureSpec{Paths: 10, Bytes: 32 << 20, Salt: "lan"}
	}
	return FixtureSpec{Paths: 30, Bytes: 128 << 20, Salt: "lan"}
}

type lanReport struct {
	PathsFetched int     `json:"pathsFetched"`
	BytesFetched int64   `json:"bytesFetched"`
	Seconds      float64 `json:"seconds"`
}

func lanSync(e *Env, lan *testnet.LAN, i int, top string) (*lanReport, error) {
	var r lanReport
	ctx, cancel := context.WithTimeout(e.Ctx, 10*time.Minute)
	defer cancel()
	out, err := lan.Run(ctx, i, "sync", "--json", top)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("sync on agent %d printed %q", i, out)
	}
	return &r, nil
}

const mbit100 = 100_000_000

// swarm: the sync rate with 1, 2 and 4 seeders whose links are shaped to
// 100 Mbit/s (namespaces and tc); trove should add up their uploads.
func runSwarm(e *Env) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: "swarm", Skipped: "nix not installed"}}, nil
	}
	f, err := e.fixtureSpec(e.lanSpec())
	if err != nil {
		return nil, err
	}
	seeders := 4
	res, skip, err := e.withLAN(seeders+1, func(lan *testnet.LAN) ([]Result, error) {
		for i := 1; i <= seeders; i++ {
			lan.Trove(i, "import-nix", f.Top)
			lan.Shape(i, testnet.Link{Rate: mbit100})
		}
		lan.Trove(0, "trust", "add", e.nixPub)
		lan.WaitConnected(seeders)
		rates := map[int]float64{}
		running := seeders
		for _, k := range []int{4, 2, 1} {
			for ; running > k; running-- {
				lan.Stop(running)
			}
			lan.WaitPeers(0, k)
			r, err := lanSync(e, lan, 0, f.Top)
			if err != nil {
				return nil, err
			}
			rates[k] = float64(r.BytesFetched) / 1e6 / r.Seconds
			e.logf("swarm: %d seeders: %.1f MB/s", k, rates[k])
			lan.Trove(0, "gc")
		}
		e.swarmRates = rates
		return []Result{
			ratioRow(Result{Scenario: "swarm", Metric: fmt.Sprintf("sync rate, 4 seeders vs 1, 100 Mbit/s each (%s)", human(f.NarBytes)),
				Unit: "MB/s", Trove: rates[4], Baseline: rates[1], BaselineName: "trove, 1 seeder", Target: "≥ 3×",
				Note: fmt.Sprintf("2 seeders: %.1f MB/s", rates[2])}, 3, true),
		}, nil
	})
	if skip != "" {
		return []Result{{Scenario: "swarm", Skipped: skip}}, nil
	}
	return res, err
}

// fanout: one seeder and F followers on 100 Mbit/s links sync at once.
// Reports the time until all have the closure and the seeder's upload as
// a multiple of the closure size (below F means followers served each other).
func runFanout(e *Env) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: "fanout", Skipped: "nix not installed"}}, nil
	}
	f, err := e.fixtureSpec(e.lanSpec())
	if err != nil {
		return nil, err
	}
	followers := 16
	if e.Quick {
		followers = 4
	}
	res, skip, err := e.withLAN(followers+1, func(lan *testnet.LAN) ([]Result, error) {
		lan.Trove(0, "import-nix", f.Top)
		for i := 0; i <= followers; i++ {
			lan.Shape(i, testnet.Link{Rate: mbit100})
			if i > 0 {
				lan.Trove(i, "trust", "add", e.nixPub)
			}
		}
		lan.WaitConnected(followers)
		start := time.Now()
		var wg gosync.WaitGroup
		errs := make([]error, followers+1)
		done := make([]time.Duration, followers+1)
		for i := 1; i <= followers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = lanSync(e, lan, i, f.Top)
				done[i] = time.Since(start)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		total := time.Since(start)
		var up int64
		var peers []struct {
			ChunkBytesOut int64 `json:"chunkBytesOut"`
		}
		json.Unmarshal([]byte(lan.Trove(0, "peers", "--json")), &peers)
		for _, p := range peers {
			up += p.ChunkBytesOut
		}
		e.fanoutDone = done[1:]
		single := float64(f.NarBytes) * 8 / mbit100 // one follower alone, at link rate
		return []Result{
			{Scenario: "fanout", Metric: fmt.Sprintf("time until %d followers have %s", followers, human(f.NarBytes)), Unit: "s",
				Trove: total.Seconds(), Baseline: single * float64(followers), BaselineName: "seeder uploading to each in turn", Ratio: total.Seconds() / (single * float64(followers)),
				Target: "< 1×", Met: met(total.Seconds() < single*float64(followers))},
			{Scenario: "fanout", Metric: "seeder upload ÷ closure size", Unit: "×", Trove: float64(up) / float64(f.NarBytes),
				Baseline: float64(followers), BaselineName: "without swarming", Ratio: float64(up) / float64(f.NarBytes) / float64(followers),
				Target: "< 1×", Met: met(float64(up)/float64(f.NarBytes) < float64(followers))},
		}, nil
	})
	if skip != "" {
		return []Result{{Scenario: "fanout", Skipped: skip}}, nil
	}
	return res, err
}

// fixtureSpec builds a fixture of a given spec, once per run.
func (e *Env) fixtureSpec(spec FixtureSpec) (*Fixture, error) {
	key := fmt.Sprintf("%s/%d/%d", spec.Salt, spec.Paths, spec.Bytes)
	if f, ok := e.fixtures[key]; ok {
		return f, nil
	}
	if e.nixKey == "" {
		sk, pk, err := NixKey(e.Ctx, e.Dir)
		if err != nil {
			return nil, err
		}
		e.nixKey, e.nixPub = sk, pk
	}
	if e.fixtures == nil {
		e.fixtures = map[string]*Fixture{}
	}
	e.logf("building a %d-path, %s fixture for the LAN scenarios...", spec.Paths, human(spec.Bytes))
	f, err := BuildFixture(e.Ctx, filepath.Join(e.Dir, "fixture-"+spec.Salt), spec, e.nixKey)
	if err != nil {
		return nil, err
	}
	e.fixtures[key] = f
	return f, nil
}
