package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newAddCmd(a *app) *cobra.Command {
	var name string
	var root bool
	c := &cobra.Command{
		Use:   "add PATH...",
		Short: "Add files or trees to the store and print their store paths",
		Long: `Add each PATH (a file, directory or symlink, which is not followed) to the
store as a content-addressed store path named after PATH's base name, and
print the store path: exactly the path nix-store --add PATH prints, computed
against --store-dir. Adding a path that is already there changes nothing.

Added paths are not GC roots: trove gc removes them unless they are roots
(--root, or trove root add) or in the closure of one.`,
		Example: `  trove add ./src
  trove add --root ./config.json
  trove add --name hello-src ./hello`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.AddRequest{Shown: args, Name: name, Root: root}
			for _, src := range args {
				req.Paths = append(req.Paths, a.abs(src))
			}
			r, err := call(cmd.Context(), a, localapi.Add, req, nil)
			for _, p := range r.Paths {
				fmt.Fprintln(a.stdout, p)
			}
			return err
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "store path `NAME` instead of PATH's base name (one PATH only)")
	c.Flags().BoolVar(&root, "root", false, "also make each added path a GC root")
	return c
}
