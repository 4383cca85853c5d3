package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

// newRootsCmd is `trove root`: the explicit GC roots.
func newRootsCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "root",
		Short: "Add, remove and list GC roots",
		Long: `Manage the explicit GC roots: store paths that trove gc keeps, together
with everything they reference. (Profiles will be roots too once they exist.)`,
		Example: `  trove root add /nix/store/<hash>-hello-2.12
  trove root list
  trove root remove <hash>-hello-2.12`,
		RunE: groupRunE,
	}
	c.AddCommand(newRootAddCmd(a), newRootRemoveCmd(a), newRootListCmd(a))
	return c
}

func newRootAddCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "add STOREPATH...",
		Short: "Make store paths GC roots",
		Long: `Make each STOREPATH a GC root, so that trove gc keeps it and its closure.
The paths must be valid in the store. Adding a root twice is harmless.`,
		Example: `  trove root add /nix/store/<hash>-hello-2.12
  trove root add $(trove add ./config)`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := a.parseStorePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.RootAdd, localapi.PathsRequest{Paths: a.absPaths(paths)}, nil)
			for _, p := range r.Paths {
				fmt.Fprintf(a.stdout, "added GC root %s\n", p)
			}
			return err
		},
	}
}

func newRootRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "remove STOREPATH...",
		Aliases: []string{"rm"},
		Short:   "Stop store paths being GC roots",
		Long: `Stop each STOREPATH being a GC root. The path stays in the store until the
next trove gc finds nothing else that needs it. Removing a path that is not a
root is an error.`,
		Example: `  trove root remove /nix/store/<hash>-hello-2.12
  trove root remove <hash>-hello-2.12 && trove gc`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := a.parseStorePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.RootRemove, localapi.PathsRequest{Paths: a.absPaths(paths)}, nil)
			for _, p := range r.Paths {
				fmt.Fprintf(a.stdout, "removed GC root %s\n", p)
			}
			return err
		},
	}
}

func newRootListCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the GC roots",
		Long: `List the explicit GC roots, sorted, one per line; with --json, as a JSON array
of store paths.`,
		Example: `  trove root list
  trove root list --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.RootList, localapi.RootListRequest{}, nil)
			if err != nil {
				return err
			}
			return writeList(a.stdout, asJSON, r.Paths)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
