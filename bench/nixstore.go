package bench

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/store"
)

// nix: trove on Nix's own store (--store nix). A seeder agent serves a
// chroot Nix store R0 that Nix filled; a follower syncs into another
// chroot store R1 through Nix's daemon. Measures the sync into Nix
// against nix copy, trove's own disk use beside Nix's store, an
// incremental generation into Nix's store, the first indexing of a Nix
// store, and serving from Nix's store against serving from trove's own.
func runNix(e *Env) ([]Result, error) {
	if !HaveNix() {
		return []Result{{Scenario: "nix", Skipped: "nix not installed"}}, nil
	}
	f, err := e.fixture("")
	if err != nil {
		return nil, err
	}
	r0 := filepath.Join(e.Dir, "nix-r0")
	defer removeAll(r0)
	if err := e.copyIntoNix(r0, f.Top); err != nil {
		return nil, err
	}
	kind, err := nixKind(r0)
	if err != nil {
		return nil, err
	}
	// First indexing happens in the seeder's home, before its agent
	// starts, so that the agent serves an indexed store.
	rows, err := e.nixIndexing(kind, e.seederHome("nix"), f)
	if err != nil {
		return nil, err
	}
	ns, err := e.startSeederOn("nix", kind)
	if err != nil {
		return nil, err
	}
	defer ns.ag.Close()
	cold, fl, err := e.nixCold(f, ns)
	defer removeAll(fl.home)
	defer removeAll(fl.root)
	if err != nil {
		return nil, err
	}
	rows = append(cold, rows...)
	du, err := nixDiskUse(f, fl.home, ns.home)
	if err != nil {
		return nil, err
	}
	rows = append(rows, du...)
	inc, err := e.nixIncremental(r0, fl, ns)
	if err != nil {
		return nil, err
	}
	rows = append(rows, inc)
	serve, err := e.nixServing(f, kind, ns)
	if err != nil {
		return nil, err
	}
	return append(rows, serve...), nil
}

func nixKind(root string) (store.Kind, error) {
	return store.ParseKind(store.BackendNix, "local?root="+root)
}

// nixFlags are trove's global flags for a home on the Nix store under root.
func nixFlags(root string) []string {
	return []string{"--store", store.BackendNix, "--nix-store", "local?root=" + root}
}

// nixRounds is how many times the timed runs alternate (best of each).
func (e *Env) nixRounds() int {
	if e.Quick {
		return 1
	}
	return 2
}

// copyIntoNix puts top's closure into the chroot Nix store under root,
// by Nix (not trove).
func (e *Env) copyIntoNix(root, top string) error {
	_, err := runCmd(e.Ctx, nixEnv(e.Dir), "nix", "copy", "--no-check-sigs", "--to", "local?root="+root, top)
	return err
}

// verifyInNix checks with Nix that f's closure is valid and intact in
// the chroot store under root.
func (e *Env) verifyInNix(root string, f *Fixture) error {
	args := append([]string{"--store", "local?root=" + root, "--verify-path"}, f.Paths...)
	if _, err := runCmd(e.Ctx, nixEnv(e.Dir), "nix-store", args...); err != nil {
		return fmt.Errorf("nix rejects what trove delivered: %v", err)
	}
	return nil
}

// nixFollower is the follower of the nix scenario: a trove home on the
// Nix store under root, and the best nix copy time of the closure.
type nixFollower struct {
	home, root string
	nixCopy    time.Duration
}

// nixCold: `trove sync` into an empty Nix store against nix copy from a
// binary cache, alternated, best of each. It returns the last round's
// follower home and Nix store, kept for the next steps.
func (e *Env) nixCold(f *Fixture, ns *seeder) ([]Result, *nixFollower, error) {
	fl := &nixFollower{}
	cacheDir := filepath.Join(e.Dir, "cache-nix")
	defer removeAll(cacheDir)
	if err := MakeCache(e.Ctx, f, cacheDir); err != nil {
		return nil, fl, err
	}
	url, stop, err := serveCache(cacheDir)
	if err != nil {
		return nil, fl, err
	}
	defer stop()
	var best time.Duration
	for round := range e.nixRounds() {
		removeAll(fl.home)
		removeAll(fl.root)
		fl.root = filepath.Join(e.Dir, fmt.Sprintf("nix-r1-%d", round))
		if fl.home, err = e.syncHomeOn(fmt.Sprintf("nix-%d", round), nixFlags(fl.root), ns); err != nil {
			return nil, fl, err
		}
		r, err := e.troveSyncOn(fl.home, nixFlags(fl.root), f.Top, ns)
		if err != nil {
			return nil, fl, err
		}
		if r.Report.BytesFetched != f.NarBytes {
			return nil, fl, fmt.Errorf("sync into Nix fetched %d bytes of a %d-byte closure", r.Report.BytesFetched, f.NarBytes)
		}
		if err := e.verifyInNix(fl.root, f); err != nil {
			return nil, fl, err
		}
		d, err := e.nixCopy(url, f.Top)
		if err != nil {
			return nil, fl, err
		}
		best, fl.nixCopy = minDur(best, r.Wall), minDur(fl.nixCopy, d)
		e.logf("nix round %d: trove sync into Nix %.2fs, nix copy %.2fs", round, r.Wall.Seconds(), d.Seconds())
	}
	size := fmt.Sprintf("%d paths, %s", len(f.Paths), human(f.NarBytes))
	return []Result{ratioRow(Result{Scenario: "nix", Metric: "sync into Nix's store, wall time (" + size + ")", Unit: "s",
		Trove: best.Seconds(), Baseline: fl.nixCopy.Seconds(), BaselineName: "nix copy --from http (loopback)", Target: "≤ 1.0×",
		Note: "both on chroot Nix stores; nix-store --verify-path passes"}, 1.0, false)}, fl, nil
}

func minDur(best, d time.Duration) time.Duration {
	if best == 0 || d < best {
		return d
	}
	return best
}

// nixDiskUse: trove's own disk use beside Nix's store, for the follower
// and the seeder, against the closure's NAR bytes.
func nixDiskUse(f *Fixture, follower, seeder string) ([]Result, error) {
	var rows []Result
	for _, h := range []struct{ who, dir string }{{"follower", follower}, {"seeder", seeder}} {
		n, err := diskUse(h.dir)
		if err != nil {
			return nil, err
		}
		rows = append(rows, ratioRow(Result{Scenario: "nix", Metric: "no second copy: trove home of the " + h.who + " on Nix's store, disk use",
			Unit: "MiB", Trove: float64(n) / (1 << 20), Baseline: float64(f.NarBytes) / (1 << 20), BaselineName: "closure NAR bytes",
			Target: "≤ 2%"}, 0.02, false))
	}
	return rows, nil
}

// diskUse is what dir takes on disk (allocated blocks, as du counts).
func diskUse(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	return n, err
}

// nixIncremental: Nix puts generation N+1 into the seeder's store; the
// follower, whose Nix store holds generation N (delivered by trove),
// syncs it.
func (e *Env) nixIncremental(r0 string, fl *nixFollower, ns *seeder) (Result, error) {
	cur, err := e.fixture("v2")
	if err != nil {
		return Result{}, err
	}
	if err := e.copyIntoNix(r0, cur.Top); err != nil {
		return Result{}, err
	}
	r, err := e.troveSyncOn(fl.home, nixFlags(fl.root), cur.Top, ns)
	if err != nil {
		return Result{}, err
	}
	if err := e.verifyInNix(fl.root, cur); err != nil {
		return Result{}, err
	}
	e.logf("nix incremental: trove fetched %s, reused %s; nix copy would transfer %s", human(r.Report.BytesFetched), human(r.Report.BytesReused), human(cur.NarBytes))
	note := "nothing reused locally"
	if r.Report.BytesReused > 0 {
		note = fmt.Sprintf("reused %s locally, all via indexes recorded at delivery of gen. N",
			human(r.Report.BytesReused))
	}
	note += fmt.Sprintf("; took %.1fs (nix copy of a whole closure: %.1fs)", r.Wall.Seconds(), fl.nixCopy.Seconds())
	return ratioRow(Result{Scenario: "nix", Metric: fmt.Sprintf("bytes fetched into Nix's store, generation N→N+1 (%d paths renamed)", len(cur.Paths)),
		Unit: "MiB", Trove: float64(r.Report.BytesFetched) / (1 << 20), Baseline: float64(cur.NarBytes) / (1 << 20),
		BaselineName: "NAR bytes nix copy transfers", Target: "≤ 0.05×", Note: note}, 0.05, false), nil
}

// nixIndexing: the first indexing of the Nix store kind names, with two
// workers in home (kept: the seeder's), then with one in a scratch home.
func (e *Env) nixIndexing(kind store.Kind, home string, f *Fixture) ([]Result, error) {
	rate2, err := e.indexRate(kind, home, 2, f)
	if err != nil {
		return nil, err
	}
	scratch := filepath.Join(e.Dir, "index-1")
	defer removeAll(scratch)
	rate1, err := e.indexRate(kind, scratch, 1, f)
	if err != nil {
		return nil, err
	}
	return []Result{{Scenario: "nix", Metric: fmt.Sprintf("first indexing of a Nix store (%d paths), 2 workers", len(f.Paths)), Unit: "GB/s",
		Trove: rate2 / 1e9, Target: "≥ 1 GB/s", Met: met(rate2 >= 1e9),
		Note: fmt.Sprintf("Reindex, NAR bytes ÷ wall; 1 worker: %.2f GB/s; trees in page cache", rate1/1e9)}}, nil
}

// indexRate opens a fresh home on kind's Nix store and times Reindex:
// NAR bytes per second.
func (e *Env) indexRate(kind store.Kind, home string, workers int, f *Fixture) (float64, error) {
	s, err := store.Open(home, store.Options{Kind: kind})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	start := time.Now()
	st, err := s.Reindex(e.Ctx, workers)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if st.Indexed != len(f.Paths) {
		return 0, fmt.Errorf("indexed %d of the %d paths in the Nix store", st.Indexed, len(f.Paths))
	}
	e.logf("nix indexing, %d workers: %d paths, %s in %.2fs", workers, st.Indexed, human(int64(st.NARBytes)), d.Seconds())
	return float64(st.NARBytes) / d.Seconds(), nil
}

// nixServing: a follower on trove's own store syncs from the Nix-backed
// seeder ns (indexed) and from an embedded-store seeder, alternated,
// best of each; then from a freshly started Nix-backed seeder that has
// indexed nothing yet.
func (e *Env) nixServing(f *Fixture, kind store.Kind, ns *seeder) ([]Result, error) {
	es, err := e.startSeeder("nix-embedded", f.Top)
	if err != nil {
		return nil, err
	}
	defer es.ag.Close()
	var nixBest, embBest time.Duration
	for round := range e.nixRounds() {
		d, err := e.timedSync(fmt.Sprintf("serve-nix-%d", round), f, ns)
		if err != nil {
			return nil, err
		}
		nixBest = minDur(nixBest, d)
		d2, err := e.timedSync(fmt.Sprintf("serve-embedded-%d", round), f, es)
		if err != nil {
			return nil, err
		}
		embBest = minDur(embBest, d2)
		e.logf("nix serving round %d: from Nix's store %.2fs, from trove's own %.2fs", round, d.Seconds(), d2.Seconds())
	}
	lazy, err := e.lazyServe(f, kind)
	if err != nil {
		return nil, err
	}
	rate := func(d time.Duration) float64 { return float64(f.NarBytes) / 1e6 / d.Seconds() }
	row := func(metric string, d time.Duration, note string) Result {
		return ratioRow(Result{Scenario: "nix", Metric: metric, Unit: "MB/s", Trove: rate(d), Baseline: rate(embBest),
			BaselineName: "same seeder on trove's own store", Target: "≥ 0.9×", Note: note}, 0.9, true)
	}
	return []Result{
		row("serving from Nix's store, sync rate (indexed)", nixBest,
			"seeder's Reindex done before serving; follower embedded"),
		row("serving from Nix's store, sync rate (first serve, not indexed)", lazy,
			"fresh seeder home: lazy indexing + background Reindex"),
	}, nil
}

// lazyServe times one sync from a seeder started on kind's Nix store with
// a fresh home (nothing indexed).
func (e *Env) lazyServe(f *Fixture, kind store.Kind) (time.Duration, error) {
	ls, err := e.startSeederOn("nix-lazy", kind)
	if err != nil {
		return 0, err
	}
	defer removeAll(ls.home)
	defer ls.ag.Close()
	d, err := e.timedSync("serve-nix-lazy", f, ls)
	if err == nil {
		e.logf("nix serving, not indexed: %.2fs", d.Seconds())
	}
	return d, err
}

// timedSync is the wall time of one `trove sync` of f into a fresh
// home on trove's own store from s.
func (e *Env) timedSync(name string, f *Fixture, s *seeder) (time.Duration, error) {
	home, err := e.syncHome(name, s)
	if err != nil {
		return 0, err
	}
	defer removeAll(home)
	r, err := e.troveSync(home, f.Top, s)
	if err != nil {
		return 0, err
	}
	if r.Report.BytesFetched != f.NarBytes {
		return 0, fmt.Errorf("sync from %s fetched %d bytes of a %d-byte closure", name, r.Report.BytesFetched, f.NarBytes)
	}
	return r.Wall, nil
}
