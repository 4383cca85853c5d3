package bench

import "fmt"

// incremental: a machine holding generation N syncs generation N+1, in
// which the deepest package changed so that Nix renames every path above
// it while their contents barely change. Reports the bytes trove fetched
// against the NAR bytes nix copy would transfer (every renamed path).
func runIncremental(e *Env) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: "incremental", Skipped: "nix not installed"}}, nil
	}
	old, err := e.fixture("")
	if err != nil {
		return nil, err
	}
	cur, err := e.fixture("v2")
	if err != nil {
		return nil, err
	}
	s, err := e.startSeeder("incremental", old.Top, cur.Top)
	if err != nil {
		return nil, err
	}
	defer s.ag.Close()
	home, err := e.syncHome("incremental", s)
	if err != nil {
		return nil, err
	}
	defer removeAll(home)
	if _, err := e.troveSync(home, old.Top, s); err != nil {
		return nil, err
	}
	r, err := e.troveSync(home, cur.Top, s)
	if err != nil {
		return nil, err
	}
	// Nix has none of the renamed paths, so it copies the whole new closure.
	nixBytes := float64(cur.NarBytes)
	e.logf("incremental: trove fetched %s, reused %s; nix copy would transfer %s", human(r.Report.BytesFetched), human(r.Report.BytesReused), human(cur.NarBytes))
	return []Result{ratioRow(Result{Scenario: "incremental", Metric: fmt.Sprintf("bytes fetched, generation N→N+1 (%d paths renamed)", len(cur.Paths)),
		Unit: "MiB", Trove: float64(r.Report.BytesFetched) / (1 << 20), Baseline: nixBytes / (1 << 20), BaselineName: "NAR bytes nix copy transfers",
		Target: "≤ 0.05×"}, 0.05, false)}, nil
}
