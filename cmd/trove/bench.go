package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/bench"
)

func newBenchCmd(a *app) *cobra.Command {
	var quick, asJSON bool
	var plotDir string
	var simRooms []int
	var simMiB, simPaths, fanoutMbit int
	c := &cobra.Command{
		Use:   "bench [--quick] [--json] [--plot DIR] [SCENARIO...]",
		Short: "Measure trove against Nix and the hardware, in one table",
		Long: `Run trove's benchmark scenarios and print one table: for each, trove's figure,
a baseline measured in the same run (the real Nix where it is installed),
the ratio, the target, and whether it was met; then the hardware limits
measured in the same run (sha256 and BLAKE3 speed, loopback TCP, disk).

Scenarios: add (trove add vs nix-store --add), cold (sync of a Nix-built
≈1 GiB, ≈100-path closure from one seeder vs nix copy from an uncompressed
binary cache on loopback, and vs the floor: the same bytes through one
libp2p TLS stream, hashed with SHA-256 and BLAKE3, no disk), memory (peak
RSS of that sync), incremental
(generation N→N+1 after a deep change: bytes fetched vs nix copy), nix
(trove on Nix's own store: sync into it vs nix copy, trove's disk use
beside it, an incremental generation into it, first indexing, serving
from it vs from trove's own store), swarm
(1, 2, 4 seeders on 100 Mbit/s links), fanout (one seeder on 100 Mbit/s
links, or --fanout-mbit: one follower alone, then 16 at once; when the first, median and
last is done over the one-follower time, the seeder's upload over the
closure; and the room's floor: the same bytes relayed so that every
link carries them once, over libp2p TLS, hashed and written, which is
the least work the room can do) — those two run in network namespaces and need root and
iproute2 — and sim (rooms of 16, 64, 256 and 512 followers simulated in
this process: real stores, nodes and fetchers over go-libp2p's in-memory
mocknet with each machine's link paced; the median, 99th percentile and
last follower over the one-follower time, the seeder's upload over the
closure; a room not done at 10× the one-follower time is stopped and its
figures marked as lower bounds).

Fixtures are built with real Nix, offline; without Nix those scenarios say
"skipped: nix not installed". --quick uses small sizes (for CI). Absolute
times vary between runs and machines: read the ratios.`,
		Example: `  trove bench --quick
  trove bench cold incremental
  sudo trove bench --plot ./plots swarm fanout
  sudo trove bench fanout sim --plot ./plots
  trove bench sim --sim-rooms 256 --sim-closure 16
  trove bench sim --sim-rooms 16 --sim-closure 8 --sim-paths 6000
  sudo trove bench fanout --fanout-mbit 25
  trove bench --json > bench.json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			var log io.Writer = a.stderr
			if asJSON && !a.stderrIsTerminal() {
				log = io.Discard
			}
			t, err := bench.Run(cmd.Context(), bench.Options{Quick: quick, Names: args, Trove: self, PlotDir: a.abs(plotDir), Log: log,
				SimRooms: simRooms, SimClosureMiB: simMiB, SimPaths: simPaths, FanoutMbit: fanoutMbit})
			if err != nil {
				return err
			}
			if asJSON {
				return t.JSON(a.stdout)
			}
			t.Print(a.stdout)
			return nil
		},
	}
	c.Flags().BoolVar(&quick, "quick", false, "small sizes (under two minutes)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&plotDir, "plot", "", "write SVG charts to `DIR`")
	c.Flags().IntSliceVar(&simRooms, "sim-rooms", nil, "sim: these rooms instead (followers each, e.g. 512 or 16,256)")
	c.Flags().IntVar(&simMiB, "sim-closure", 0, "sim: a closure of `MIB` mebibytes instead (more chunks, more memory)")
	c.Flags().IntVar(&simPaths, "sim-paths", 0, "sim: a closure of `N` paths instead of 30 (1 to 65536; a desktop NixOS system has 3,000 to 5,000)")
	c.Flags().IntVar(&fanoutMbit, "fanout-mbit", 0, "fanout: links of `MBIT` Mbit/s (5 to 10000) instead of 100, where the cores cannot carry 17 agents at 100")
	c.AddCommand(&cobra.Command{
		Use:    "room-floor-node INDEX ADDRS SIZE START DIR",
		Short:  "One machine of the fanout's room floor (run by trove bench in a network namespace)",
		Hidden: true,
		Args:   cobra.ExactArgs(5),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := bench.ParseRoomFloorSpec(args)
			if err != nil {
				return err
			}
			return bench.RoomFloorNode(cmd.Context(), spec, a.stdout)
		},
	})
	return c
}
