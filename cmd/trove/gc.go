package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/store"
	trovesync "github.com/trove-p2p/trove/sync"
)

type gcReport struct {
	DryRun     bool     `json:"dryRun"`
	Removed    []string `json:"removed"`
	BytesFreed uint64   `json:"bytesFreed"`
}

func newGCCmd(a *app) *cobra.Command {
	var asJSON, dryRun bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove the store paths no GC root needs",
		Long: `Remove every store path that is not in the closure of a GC root (see trove
root), printing each removed path and then how many paths were removed and
how many bytes (NAR sizes) were freed. Paths that refer to others are removed
before what they refer to, so an interrupted gc leaves a consistent store.

With --dry-run, only print what would be removed. With --json, print
{"dryRun", "removed": [paths...], "bytesFreed"} instead.`,
		Example: `  trove gc --dry-run
  trove gc
  trove gc --json | jq .bytesFreed`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(func(s *store.Store) error {
				res, err := s.GC(cmd.Context(), dryRun, trovesync.OpenProfiles(s).Roots)
				if err != nil && res != nil && !dryRun && len(res.Removed) > 0 {
					fmt.Fprintf(a.stderr, "trove: removed %d %s (%s) before the error\n",
						len(res.Removed), plural(len(res.Removed), "path", "paths"), humanBytes(res.BytesFreed))
				}
				if err != nil {
					return err
				}
				rep := gcReport{DryRun: dryRun, Removed: make([]string, len(res.Removed)), BytesFreed: res.BytesFreed}
				for i, p := range res.Removed {
					rep.Removed[i] = p.Abs(s.StoreDir())
				}
				if asJSON {
					return writeJSON(a.stdout, rep)
				}
				for _, p := range rep.Removed {
					fmt.Fprintln(a.stdout, p)
				}
				n := len(rep.Removed)
				if dryRun {
					fmt.Fprintf(a.stdout, "%d %s would be removed, %s would be freed\n", n, plural(n, "path", "paths"), humanBytes(rep.BytesFreed))
				} else {
					fmt.Fprintf(a.stdout, "%d %s removed, %s freed\n", n, plural(n, "path", "paths"), humanBytes(rep.BytesFreed))
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be removed")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return c
}
