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

// onLAN runs scenario fn with a LAN of n agents (withLAN) and the
// fixture of e.lanSpec, or reports the scenario skipped where Nix or
// network namespaces are missing.
func (e *Env) onLAN(scenario string, n int, fn func(*testnet.LAN, *Fixture) ([]Result, error)) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: scenario, Skipped: "nix not installed"}}, nil
	}
	f, err := e.fixtureSpec(e.lanSpec())
	if err != nil {
		return nil, err
	}
	res, skip, err := e.withLAN(n, func(lan *testnet.LAN) ([]Result, error) { return fn(lan, f) })
	if skip != "" {
		return []Result{{Scenario: scenario, Skipped: skip}}, nil
	}
	return res, err
}

// withLAN runs fn with a LAN of n agent processes in network namespaces,
// and removes the LAN when fn returns. Where namespaces cannot run it
// returns a skip note instead.
func (e *Env) withLAN(n int, fn func(*testnet.LAN) ([]Result, error)) (res []Result, skip string, err error) {
	if os.Geteuid() != 0 {
		return nil, "needs root (network namespaces)", nil
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, "needs iproute2 (ip)", nil
	}
	os.Setenv(testnet.BinaryEnv, e.Trove)
	dir, err := os.MkdirTemp(e.Dir, "lan")
	if err != nil {
		return nil, "", err
	}
	lan, err := testnet.NewLAN(dir, n)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			e.logf("%s", lan.LogTails())
		}
		if cerr := lan.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	res, err = fn(lan)
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
	seeders := 4
	return e.onLAN("swarm", seeders+1, func(lan *testnet.LAN, f *Fixture) ([]Result, error) {
		for i := 1; i <= seeders; i++ {
			if _, err := lan.Trove(i, "import-nix", f.Top); err != nil {
				return nil, err
			}
			if err := lan.Shape(i, testnet.Link{Rate: mbit100}); err != nil {
				return nil, err
			}
		}
		if _, err := lan.Trove(0, "trust", "add", e.nixPub); err != nil {
			return nil, err
		}
		if _, err := lan.WaitConnected(seeders); err != nil {
			return nil, err
		}
		rates := map[int]float64{}
		running := seeders
		for _, k := range []int{4, 2, 1} {
			for ; running > k; running-- {
				if err := lan.Stop(running); err != nil {
					e.logf("%v", err)
				}
			}
			if _, err := lan.WaitPeers(0, k); err != nil {
				return nil, err
			}
			r, err := lanSync(e, lan, 0, f.Top)
			if err != nil {
				return nil, err
			}
			rates[k] = float64(r.BytesFetched) / 1e6 / r.Seconds
			e.logf("swarm: %d seeders: %.1f MB/s", k, rates[k])
			if _, err := lan.Trove(0, "gc"); err != nil {
				return nil, err
			}
		}
		e.swarmRates = rates
		return []Result{
			ratioRow(Result{Scenario: "swarm", Metric: fmt.Sprintf("sync rate, 4 seeders vs 1, 100 Mbit/s each (%s)", human(f.NarBytes)),
				Unit: "MB/s", Trove: rates[4], Baseline: rates[1], BaselineName: "trove, 1 seeder", Target: "≥ 3×",
				Note: fmt.Sprintf("2 seeders: %.1f MB/s", rates[2])}, 3, true),
		}, nil
	})
}

// fanout: one seeder and F followers on 100 Mbit/s links sync at once.
// Reports the time until all have the closure and the seeder's upload as
// a multiple of the closure size (below F means followers served each other).
func runFanout(e *Env) ([]Result, error) {
	followers := 16
	if e.Quick {
		followers = 4
	}
	return e.onLAN("fanout", followers+1, func(lan *testnet.LAN, f *Fixture) ([]Result, error) {
		if _, err := lan.Trove(0, "import-nix", f.Top); err != nil {
			return nil, err
		}
		for i := 0; i <= followers; i++ {
			if err := lan.Shape(i, testnet.Link{Rate: mbit100}); err != nil {
				return nil, err
			}
			if i > 0 {
				if _, err := lan.Trove(i, "trust", "add", e.nixPub); err != nil {
					return nil, err
				}
			}
		}
		if _, err := lan.WaitConnected(followers); err != nil {
			return nil, err
		}
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
		out, err := lan.Trove(0, "peers", "--json")
		if err != nil {
			return nil, err
		}
		json.Unmarshal([]byte(out), &peers)
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
