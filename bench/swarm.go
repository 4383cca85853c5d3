package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// fanout: one seeder and F followers, every link shaped to 100 Mbit/s
// (or Env.FanoutMbit).
// In the same run, one follower syncs alone (the baseline; its closure is
// then collected again), then all F at once. Reports when the first, the
// median and the last follower was done, each over the one-follower
// time, and what the seeder sent over its link (its interface's counter,
// every header included) over the closure's NAR bytes.
func runFanout(e *Env) ([]Result, error) {
	followers := 16
	if e.Quick {
		followers = 4
	}
	return e.onLAN("fanout", followers+1, func(lan *testnet.LAN, f *Fixture) ([]Result, error) {
		if _, err := lan.Trove(0, "import-nix", f.Top); err != nil {
			return nil, err
		}
		rate := e.fanoutRate()
		if rate != mbit100 {
			e.logf("fanout: links of %s instead of 100 Mbit/s", rateString(float64(rate)/8))
		}
		for i := 0; i <= followers; i++ {
			if err := lan.Shape(i, testnet.Link{Rate: rate}); err != nil {
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
		if _, err := lanSync(e, lan, 1, f.Top); err != nil {
			return nil, err
		}
		one := time.Since(start)
		if _, err := lan.Trove(1, "gc"); err != nil {
			return nil, err
		}
		e.logf("fanout: one follower alone: %.1fs", one.Seconds())
		// The seeder starts the room afresh: it remembers for a minute
		// what it sent whom, and would tell the others to get the whole
		// closure from follower 1, which no longer has it.
		if err := lan.Restart(0); err != nil {
			return nil, err
		}
		if _, err := lan.WaitConnected(followers); err != nil {
			return nil, err
		}
		_, tx0, err := lan.LinkBytes(0)
		if err != nil {
			return nil, err
		}
		served0, err := chunkBytesOut(lan, 0)
		if err != nil {
			return nil, err
		}
		cpuSince := cpuFrom()
		start = time.Now()
		var wg gosync.WaitGroup
		errs := make([]error, followers+1)
		done := make([]time.Duration, followers)
		for i := 1; i <= followers; i++ {
			wg.Go(func() {
				_, errs[i] = lanSync(e, lan, i, f.Top)
				done[i-1] = time.Since(start)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		cpu := cpuSince()
		_, tx1, err := lan.LinkBytes(0)
		if err != nil {
			return nil, err
		}
		served1, err := chunkBytesOut(lan, 0)
		if err != nil {
			return nil, err
		}
		slices.Sort(done)
		e.fanoutDone, e.fanoutOne = done, one
		r := simRun{N: followers, Done: done}
		room := fmt.Sprintf("%d followers: ", followers)
		row := func(metric string, d time.Duration, target string, limit float64) Result {
			x := Result{Scenario: "fanout", Metric: room + metric + " ÷ one follower", Unit: "s", Trove: d.Seconds(),
				Baseline: one.Seconds(), BaselineName: "one follower alone", Target: target}
			if limit > 0 {
				return ratioRow(x, limit, false)
			}
			x.Ratio = x.Trove / x.Baseline
			return x
		}
		median, _ := r.at(50)
		up := float64(tx1-tx0) / float64(f.NarBytes)
		floor, err := e.roomFloorRows(lan, followers, f.NarBytes, one, median, cpu)
		if err != nil {
			// The room's own figures stand without it.
			floor = []Result{{Scenario: "fanout", Metric: "room floor", Skipped: "failed: " + err.Error()}}
		}
		medianRow := row("median done", median, "≤ 1.2×", 1.2)
		if cpu.all > 0 {
			// All 17 agents share this machine's cores; the one follower
			// alone had them to itself.
			medianRow.Note = fanoutCPUNote(cpu.busy(), rate)
		}
		return append([]Result{
			{Scenario: "fanout", Metric: fmt.Sprintf("one follower alone: %d paths, %s over %s", len(f.Paths), human(f.NarBytes), rateString(float64(rate)/8)),
				Unit: "s", Trove: one.Seconds(), Target: "(context)"},
			row("first done", done[0], "(context)", 0),
			medianRow,
			row("last done", done[len(done)-1], "≤ 1.5×", 1.5),
			{Scenario: "fanout", Metric: "seeder upload ÷ closure", Unit: "MB", Trove: float64(tx1-tx0) / 1e6,
				Baseline: float64(f.NarBytes) / 1e6, BaselineName: "closure NAR", Ratio: up, Target: "≤ 1.5×", Met: met(up <= 1.5),
				Note: fmt.Sprintf("bytes the seeder's interface sent, headers included; chunk bytes trove served: %.2f× the closure",
					float64(served1-served0)/float64(f.NarBytes))},
		}, floor...), nil
	})
}

// chunkBytesOut is what agent i has served of its store so far, by its
// own count (trove peers --json).
func chunkBytesOut(lan *testnet.LAN, i int) (int64, error) {
	out, err := lan.Trove(i, "peers", "--json")
	if err != nil {
		return 0, err
	}
	var peers []struct {
		ChunkBytesOut int64 `json:"chunkBytesOut"`
	}
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		return 0, fmt.Errorf("trove peers --json printed %q", out)
	}
	var n int64
	for _, p := range peers {
		n += p.ChunkBytesOut
	}
	return n, nil
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

// fanoutCPUNote is cpuNote for the fanout's room on links of rate bits
// per second, and where the room was CPU-bound, the slower links (a
// quarter, within the flag's bounds) that would leave the cores room.
func fanoutCPUNote(busy float64, rate int64) string {
	note := cpuNote(busy)
	if slower := int(rate / 4 / 1_000_000); busy > cpuBound && slower >= minFanoutMbit {
		note += fmt.Sprintf(" (--fanout-mbit %d leaves the cores more room)", slower)
	}
	return note
}
