package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// add: `trove add` against `nix-store --add` of the same tree (the
// fixture's data files: ≈1 GiB, or 128 MiB with --quick), each as a
// process, alternating, with dirty pages flushed before each.
func runAdd(e *Env) ([]Result, error) {
	spec := e.closureSpec("")
	tree := filepath.Join(e.Dir, "fixture", "blobs")
	if err := writeBlobs(tree, blobSizes(spec.Paths, spec.Bytes)); err != nil {
		return nil, err
	}
	haveNix := HaveNix()
	var best, nixBest time.Duration
	for round := range 2 {
		home := filepath.Join(e.Dir, fmt.Sprintf("add-%d", round))
		dropCaches()
		start := time.Now()
		if _, err := runCmd(e.Ctx, os.Environ(), e.Trove, "--home", home, "add", tree); err != nil {
			return nil, err
		}
		d := time.Since(start)
		removeAll(home)
		if best == 0 || d < best {
			best = d
		}
		if !haveNix {
			continue
		}
		dropCaches()
		start = time.Now()
		out, err := runCmd(e.Ctx, nixEnv(e.Dir), "nix-store", "--add", tree)
		if err != nil {
			return nil, err
		}
		nd := time.Since(start)
		runCmd(e.Ctx, nixEnv(e.Dir), "nix-store", "--delete", strings.TrimSpace(out))
		if nixBest == 0 || nd < nixBest {
			nixBest = nd
		}
		e.logf("add round %d: trove %.2fs, nix-store --add %.2fs", round, d.Seconds(), nd.Seconds())
	}
	r := Result{Scenario: "add", Metric: "add a " + human(spec.Bytes) + " tree", Unit: "s", Trove: best.Seconds(), Target: "≤ 1.0×"}
	if !haveNix {
		r.Note = "skipped baseline: nix not installed"
		return []Result{r}, nil
	}
	r.Baseline, r.BaselineName = nixBest.Seconds(), "nix-store --add"
	return []Result{ratioRow(r, 1.0, false)}, nil
}
