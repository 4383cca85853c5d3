package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newInitCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the trove home",
		Long: `Create the trove home: the store database (db/) and the directory that holds
the store paths' trees (store/). Running it again on an existing home changes
nothing and says so. Other commands create the home too when it is missing;
init is for doing it on purpose and seeing where it went.

The home is --home, else $TROVE_HOME, else $XDG_DATA_HOME/trove
(~/.local/share/trove), or /var/lib/trove when run as root. A home keeps the
--store-dir it was created with.`,
		Example: `  trove init
  trove --home /srv/trove --store-dir /nix/store init
  TROVE_HOME=$(mktemp -d) trove init`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.Init, localapi.InitRequest{}, nil)
			if err != nil {
				return err
			}
			if r.Created {
				fmt.Fprintf(a.stdout, "created trove home %s (store dir %s)\n", r.Home, r.StoreDir)
				return nil
			}
			fmt.Fprintf(a.stdout, "trove home %s already exists (store dir %s, %d %s, %s)\n",
				r.Home, r.StoreDir, r.Paths, plural(r.Paths, "path", "paths"), humanBytes(r.Bytes))
			return nil
		},
	}
}
