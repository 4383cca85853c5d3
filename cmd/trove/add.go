package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/store"
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
			if name != "" && len(args) > 1 {
				return usagef("--name names one path, but %d were given", len(args))
			}
			return a.withStore(func(s *store.Store) error {
				for _, src := range args {
					abs := a.abs(src)
					if _, err := os.Lstat(abs); err != nil {
						return fmt.Errorf("cannot add %s: %w", src, bareError(err, abs))
					}
					n := name
					if n == "" {
						n = filepath.Base(abs)
					}
					pi, err := s.AddTree(cmd.Context(), abs, n)
					if err != nil {
						return err
					}
					if root {
						if err := s.AddRoot(pi.Path); err != nil {
							return err
						}
					}
					fmt.Fprintln(a.stdout, pi.Path.Abs(s.StoreDir()))
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "store path `NAME` instead of PATH's base name (one PATH only)")
	c.Flags().BoolVar(&root, "root", false, "also make each added path a GC root")
	return c
}
