package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newGCCmd(a *app) *cobra.Command {
	var asJSON, dryRun bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove the store paths no GC root needs, and spools no sync is using",
		Long: `Remove every store path that is not in the closure of a GC root (see trove
root), printing each removed path and then how many paths were removed and
how many bytes (NAR sizes) were freed. Paths that refer to others are removed
before what they refer to, so an interrupted gc leaves a consistent store.

Also remove the spools (partly fetched NARs, in $TROVE_HOME/partial) of syncs
that failed or were stopped, which a later sync would have resumed from, and
say how much disk they took. A spool that a running sync is using, in the
agent or in another trove process, is left alone.

With --dry-run, only print what would be removed. With --json, print
{"dryRun", "removed": [paths...], "bytesFreed", "spoolsRemoved",
"spoolBytesFreed", "spoolsInUse"} instead.`,
		Example: `  trove gc --dry-run
  trove gc
  trove gc --json | jq .bytesFreed`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := call(cmd.Context(), a, localapi.GC, localapi.GCRequest{DryRun: dryRun}, nil)
			if err != nil && !dryRun && len(rep.Removed) > 0 {
				fmt.Fprintf(a.stderr, "trove: removed %d %s (%s) before the error\n",
					len(rep.Removed), plural(len(rep.Removed), "path", "paths"), humanBytes(rep.BytesFreed))
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			for _, p := range rep.Removed {
				fmt.Fprintln(a.stdout, p)
			}
			n, k := len(rep.Removed), rep.SpoolsRemoved
			would := ""
			if dryRun {
				would = "would be "
			}
			fmt.Fprintf(a.stdout, "%d %s %sremoved, %s %sfreed", n, plural(n, "path", "paths"), would, humanBytes(rep.BytesFreed), would)
			if k > 0 {
				fmt.Fprintf(a.stdout, "; %d %s of stopped syncs %sremoved, %s %sfreed", k, plural(k, "spool", "spools"), would, humanBytes(uint64(rep.SpoolBytesFreed)), would)
			}
			if u := rep.SpoolsInUse; u > 0 {
				fmt.Fprintf(a.stdout, "; %d %s in use by running syncs kept", u, plural(u, "spool", "spools"))
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be removed")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return c
}
