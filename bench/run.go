package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario is one benchmark.
type Scenario struct {
	Name string
	What string
	Run  func(*Env) ([]Result, error)
}

// Scenarios are all of trove's benchmarks, in table order.
var Scenarios = []Scenario{
	{"add", "trove add vs nix-store --add of the same tree", runAdd},
	{"cold", "sync of a Nix-built closure from one seeder vs nix copy from a binary cache (also: memory)", runCold},
	{"incremental", "generation N→N+1 after a deep change: bytes fetched vs what nix copy moves", runIncremental},
	{"swarm", "sync rate from 1, 2, 4 seeders on 100 Mbit/s links (root)", runSwarm},
	{"nix", "on Nix's own store: sync into it vs nix copy, disk use, incremental, first indexing, serving from it", runNix},
	{"fanout", "one follower alone, then 16 at once, from one seeder on 100 Mbit/s links (root)", runFanout},
	{"compress", "sync of real source files over a 20 Mbit/s link, compressed vs not (root)", runCompress},
	{"sim", "simulated rooms of 16 to 512 followers: in-process agents over go-libp2p's mocknet", runSim},
}

// ScenarioNames are the names Run takes, in table order ("memory" runs
// with "cold").
func ScenarioNames() []string {
	var names []string
	for _, s := range Scenarios {
		names = append(names, s.Name)
		if s.Name == "cold" {
			names = append(names, "memory")
		}
	}
	return names
}

// Options configure a benchmark run.
type Options struct {
	Quick   bool
	Names   []string // scenarios to run; all when empty ("memory" runs with "cold")
	Trove   string   // the trove binary
	PlotDir string   // write SVG charts here when set
	Log     io.Writer
	// SimRooms, SimClosureMiB and SimPaths, when set, replace the sim's
	// rooms (in followers), its closure's size and its number of paths:
	// to measure one room again, or how a room fares with more chunks or
	// more paths than one haves subscription names (p2p.MaxHaveHashes).
	SimRooms      []int
	SimClosureMiB int
	SimPaths      int
	// FanoutMbit, when set, replaces the fanout's links of 100 Mbit/s: a
	// machine whose cores cannot carry its room's 17 agents at 100 Mbit/s
	// (each has a core of its own in a real room) measures the swarm's
	// schedule on slower links, where they can.
	FanoutMbit int
}

// Bounds of the sim's settings: a simulated machine takes about 22 MB of
// memory besides its share of the closure. And of the fanout's links: at
// 5 Mbit/s one follower alone takes about four minutes of the 128 MiB
// fixture (a minute of --quick's 32 MiB), and tc shapes no faster than
// the veths carry.
const (
	maxSimRoom       = 4096
	maxSimClosureMiB = 1024
	maxSimPaths      = 65536
	minFanoutMbit    = 5
	maxFanoutMbit    = 10_000
)

// Table is the outcome of a run.
type Table struct {
	Machine string    `json:"machine"`
	When    time.Time `json:"when"`
	Quick   bool      `json:"quick"`
	Limits  Limits    `json:"limits"`
	Results []Result  `json:"results"`
}

// Run runs the chosen scenarios and measures the hardware limits.
func Run(ctx context.Context, o Options) (*Table, error) {
	for _, n := range o.Names {
		if n != "memory" && !slices.ContainsFunc(Scenarios, func(s Scenario) bool { return s.Name == n }) {
			return nil, fmt.Errorf("no scenario %q (have: %s)", n, strings.Join(ScenarioNames(), ", "))
		}
	}
	for _, n := range o.SimRooms {
		if n < 1 || n > maxSimRoom {
			return nil, fmt.Errorf("a simulated room holds 1 to %d followers, not %d", maxSimRoom, n)
		}
	}
	if o.SimClosureMiB < 0 || o.SimClosureMiB > maxSimClosureMiB {
		return nil, fmt.Errorf("the simulated closure is 1 to %d MiB, not %d", maxSimClosureMiB, o.SimClosureMiB)
	}
	if o.SimPaths < 0 || o.SimPaths > maxSimPaths {
		return nil, fmt.Errorf("the simulated closure has 1 to %d paths, not %d", maxSimPaths, o.SimPaths)
	}
	if o.FanoutMbit != 0 && (o.FanoutMbit < minFanoutMbit || o.FanoutMbit > maxFanoutMbit) {
		return nil, fmt.Errorf("the fanout's links are %d to %d Mbit/s, not %d", minFanoutMbit, maxFanoutMbit, o.FanoutMbit)
	}
	dir, err := os.MkdirTemp("", "trove-bench-")
	if err != nil {
		return nil, err
	}
	defer removeAll(dir)
	e := &Env{Ctx: ctx, Dir: dir, Quick: o.Quick, Trove: o.Trove, Log: o.Log, SimRooms: o.SimRooms, SimClosureMiB: o.SimClosureMiB,
		SimPaths: o.SimPaths, FanoutMbit: o.FanoutMbit}
	t := &Table{Machine: fmt.Sprintf("%s/%s, %d cores", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()), When: time.Now().UTC(), Quick: o.Quick}
	e.logf("measuring hardware limits...")
	t.Limits = MeasureLimits(dir, o.Quick)
	for _, s := range Scenarios {
		if len(o.Names) > 0 && !slices.Contains(o.Names, s.Name) && !(s.Name == "cold" && slices.Contains(o.Names, "memory")) {
			continue
		}
		e.logf("running %s: %s", s.Name, s.What)
		rs, err := s.Run(e)
		if err != nil {
			rs = []Result{{Scenario: s.Name, Skipped: "failed: " + err.Error()}}
		}
		t.Results = append(t.Results, rs...)
	}
	if o.PlotDir != "" {
		if err := e.writePlots(o.PlotDir); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Print writes the table for people.
func (t *Table) Print(w io.Writer) {
	fmt.Fprintf(w, "trove bench, %s, %s%s\n\n", t.Machine, t.When.Format("2006-01-02 15:04 UTC"), map[bool]string{true: " (--quick)"}[t.Quick])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\ttrove\tbaseline\tratio\ttarget\tmet\t")
	for _, r := range t.Results {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\n", r.Scenario, "skipped: "+r.Skipped)
			continue
		}
		base, ratio, ok := "", "", ""
		if r.Baseline > 0 {
			base = fmt.Sprintf("%s %s (%s)", num(r.Baseline), r.Unit, r.BaselineName)
		}
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.3g×", r.Ratio)
		}
		at := ""
		if r.AtLeast {
			at, ratio = "> ", "> "+ratio
		}
		if r.Met != nil {
			ok = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s%s %s\t%s\t%s\t%s\t%s\t\n", r.Scenario, r.Metric, at, num(r.Trove), r.Unit, base, ratio, r.Target, ok)
		if r.Note != "" {
			fmt.Fprintf(tw, "\t  %s\t\t\t\t\t\t\n", r.Note)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nlimits measured in this run: sha256 %.0f MB/s, BLAKE3 %.0f MB/s (one core), loopback TCP %.0f MB/s, disk write+fsync %.0f MB/s\n",
		t.Limits.SHA256MBps, t.Limits.BLAKE3MBps, t.Limits.LoopbackMBps, t.Limits.DiskMBps)
}

// JSON writes the table for machines.
func (t *Table) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(t)
}

func num(f float64) string {
	s := fmt.Sprintf("%.3g", f)
	if strings.Contains(s, "e") {
		s = fmt.Sprintf("%.0f", f)
	}
	return s
}
