package bench

import (
	"fmt"
	"path/filepath"
	"time"
)

// cold: sync of the ≈1 GiB, ≈100-path closure from one seeder on loopback,
// against real `nix copy --from http://127.0.0.1:PORT` from an uncompressed
// binary cache of the same closure. Also reports the syncing process's
// peak RSS (the memory scenario).
func runCold(e *Env) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: "cold", Skipped: "nix not installed"}}, nil
	}
	f, err := e.fixture("")
	if err != nil {
		return nil, err
	}
	s, err := e.startSeeder("cold", f.Top)
	if err != nil {
		return nil, err
	}
	defer s.ag.Close()
	cacheDir := filepath.Join(e.Dir, "cache-cold")
	if err := MakeCache(e.Ctx, f, cacheDir); err != nil {
		return nil, err
	}
	url, stop, err := serveCache(cacheDir)
	if err != nil {
		return nil, err
	}
	defer stop()

	// Alternate the three (trove as it decides, trove never asking for
	// compression, nix copy), twice, and keep each one's best time.
	var best *syncRun
	var nixBest, plainBest float64
	for round := range 2 {
		plainHome, err := e.syncHome(fmt.Sprintf("cold-plain-%d", round), s)
		if err != nil {
			return nil, err
		}
		pr, err := e.troveSyncOn(plainHome, []string{"sync", "--compress", "never"}, f.Top, s)
		if err != nil {
			return nil, err
		}
		if plainBest == 0 || pr.Wall.Seconds() < plainBest {
			plainBest = pr.Wall.Seconds()
		}
		removeAll(plainHome)
		home, err := e.syncHome(fmt.Sprintf("cold-%d", round), s)
		if err != nil {
			return nil, err
		}
		r, err := e.troveSync(home, f.Top, s)
		if err != nil {
			return nil, err
		}
		if r.Report.BytesFetched != f.NarBytes {
			return nil, fmt.Errorf("cold sync fetched %d bytes of a %d-byte closure", r.Report.BytesFetched, f.NarBytes)
		}
		if best == nil || r.Wall < best.Wall {
			best = r
		}
		removeAll(home)
		d, err := e.nixCopy(url, f.Top)
		if err != nil {
			return nil, err
		}
		if nixBest == 0 || d.Seconds() < nixBest {
			nixBest = d.Seconds()
		}
		e.logf("cold round %d: trove %.2fs (never compressing %.2fs), nix copy %.2fs", round, r.Wall.Seconds(), pr.Wall.Seconds(), d.Seconds())
	}
	size := fmt.Sprintf("%d paths, %s", len(f.Paths), human(f.NarBytes))
	// The floor: what moving and hashing these bytes costs under trove's
	// rules, with nothing else. Best of two, like the others.
	var floor time.Duration
	for range 2 {
		d, err := secureFloor(e.Ctx, f.NarBytes)
		if err != nil {
			return nil, err
		}
		if floor == 0 || d < floor {
			floor = d
		}
	}
	e.logf("cold floor: %.2fs", floor.Seconds())
	return []Result{
		ratioRow(Result{Scenario: "cold", Metric: "sync wall time (" + size + ")", Unit: "s",
			Trove: best.Wall.Seconds(), Baseline: nixBest, BaselineName: "nix copy --from http (loopback)", Target: "≤ 1.0×"}, 1.0, false),
		{Scenario: "cold", Metric: "sync wall time against the floor", Unit: "s",
			Trove: best.Wall.Seconds(), Baseline: floor.Seconds(), Ratio: best.Wall.Seconds() / floor.Seconds(),
			BaselineName: "floor: one libp2p TLS stream + sha256 + BLAKE3, no disk", Target: "(context)",
			Note: fmt.Sprintf("nix copy took %.2f× the floor", nixBest/floor.Seconds())},
		ratioRow(Result{Scenario: "cold", Metric: "sync wall time, compression as trove decides ÷ never asked", Unit: "s",
			Trove: best.Wall.Seconds(), Baseline: plainBest, BaselineName: "trove sync --compress never", Target: "≤ 1.03×"}, 1.03, false),
		{Scenario: "memory", Metric: "peak RSS of the syncing process (" + size + ")", Unit: "MiB",
			Trove: float64(best.MaxRSS) / (1 << 20), Target: "≤ 200 MiB", Met: met(best.MaxRSS <= 200<<20)},
	}, nil
}
