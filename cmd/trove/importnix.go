package main

import (
	"fmt"

	"github.com/trove-p2p/trove/nix"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/store"
)

func newImportNixCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "import-nix STOREPATH...",
		Short: "Copy closures from the local Nix store into trove",
		Long: `Copy each STOREPATH and everything it references from the local Nix store
into trove, references first, keeping narHash, narSize, references, deriver,
signatures and content address. Metadata comes from nix path-info --json -r
and contents from nix-store --dump; every NAR is checked against Nix's
narHash on the way in. Paths trove already has are skipped.

This needs the Nix command-line tools (on Debian: apt-get install nix-bin),
and the trove home must use the same --store-dir as that Nix store.
Progress goes to standard error when it is a terminal; at the end trove
prints how many paths and bytes it imported.`,
		Example: `  trove import-nix /nix/store/<hash>-hello-2.12
  trove import-nix ./result
  trove import-nix $(nix-build '<nixpkgs>' -A hello --no-out-link)`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Arguments that parse as store paths go to Nix in full; anything
			// else (a ./result symlink, say) Nix resolves itself.
			paths := make([]string, len(args))
			for i, arg := range args {
				paths[i] = arg
				if ps, err := a.parseStorePaths([]string{arg}); err == nil {
					paths[i] = ps[0].Abs(a.storeDir)
				}
			}
			showProgress := a.stderrIsTerminal()
			return a.withStore(func(s *store.Store) error {
				var bytes uint64
				added, err := s.ImportNix(cmd.Context(), paths, func(pi *nix.PathInfo) {
					bytes += pi.NarSize
					if showProgress {
						fmt.Fprintf(a.stderr, "imported %s (%s)\n", pi.Path.Abs(s.StoreDir()), humanBytes(pi.NarSize))
					}
				})
				return a.reportImport(len(added), bytes, err)
			})
		},
	}
}

// reportImport says what an import added (n paths, bytes NAR bytes): on
// err, how much was kept before it.
func (a *app) reportImport(n int, bytes uint64, err error) error {
	switch {
	case err != nil:
		if n > 0 {
			fmt.Fprintf(a.stderr, "trove: imported %d %s (%s) before the error; running the command again resumes\n",
				n, plural(n, "path", "paths"), humanBytes(bytes))
		}
		return err
	case n == 0:
		fmt.Fprintln(a.stdout, "nothing to import: every path of the closure is already in the store")
	default:
		fmt.Fprintf(a.stdout, "imported %d %s, %s\n", n, plural(n, "path", "paths"), humanBytes(bytes))
	}
	return nil
}
