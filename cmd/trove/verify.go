package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

// verifyProblem is one line of trove verify --json.
func newVerifyCmd(a *app) *cobra.Command {
	var asJSON, all bool
	c := &cobra.Command{
		Use:   "verify [--all | STOREPATH...]",
		Short: "Check stored paths against their hashes and references",
		Long: `Check the given store paths, or with --all every valid path: recompute each
path's NAR from its tree and compare its hash and size with the recorded
narHash and narSize, check that the tree's files, modes and symlinks are
unchanged, and check that every path it references is valid.

Every problem is listed, one per line, as "<store path>: <kind>: <detail>",
where kind is missing, corrupt or reference, and trove verify exits with
status 1. When all is well it prints how many paths it checked. With --json
it prints {"checked": N, "problems": [{"path", "kind", "detail"}...]}.`,
		Example: `  trove verify --all
  trove verify /nix/store/<hash>-hello-2.12
  trove verify --all --json | jq '.problems[].path'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usagef("give store paths or --all, not both or neither; usage: %s", cmd.UseLine())
			}
			paths, err := a.parseStorePaths(args)
			if err != nil {
				return err
			}
			rep, err := call(cmd.Context(), a, localapi.Verify, localapi.VerifyRequest{Paths: a.absPaths(paths), All: all}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				for _, vp := range rep.Problems {
					fmt.Fprintf(a.stdout, "%s: %s: %s\n", vp.Path, vp.Kind, vp.Detail)
				}
			}
			if n := len(rep.Problems); n > 0 {
				fmt.Fprintf(a.stderr, "trove: %d %s found in %d checked %s\n",
					n, plural(n, "problem", "problems"), rep.Checked, plural(rep.Checked, "path", "paths"))
				return errReported
			}
			if !asJSON {
				fmt.Fprintf(a.stdout, "checked %d %s, no problems\n", rep.Checked, plural(rep.Checked, "path", "paths"))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "check every valid path in the store")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return c
}
