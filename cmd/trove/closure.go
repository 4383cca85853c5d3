package main

import (
	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newClosureCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "closure STOREPATH...",
		Short: "List the closure of store paths",
		Long: `List the closure of the STOREPATHs: the paths themselves and everything they
reference, directly or not, each once, like nix-store -qR. References come
before the paths that refer to them, so the list is an order in which the
paths can be copied or registered. With --json, print a JSON array of the
same paths in the same order.`,
		Example: `  trove closure /nix/store/<hash>-hello-2.12
  trove closure --json ./result`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := a.parseStorePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.Closure, localapi.PathsRequest{Paths: a.absPaths(paths)}, nil)
			if err != nil {
				return err
			}
			return writeList(a.stdout, asJSON, r.Paths)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of store paths")
	return c
}
