package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/nixcache"
)

func newImportCacheCmd(a *app) *cobra.Command {
	var noCheckSigs bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "import-cache URL STOREPATH...",
		Short: "Copy closures from a Nix binary cache into trove",
		Long: `Copy each STOREPATH and everything it references from the Nix binary cache
at URL into trove, references first, keeping narHash, references, deriver,
signatures and content address. URL is file:///DIR (a cache written by
nix copy --to file:///DIR, on a USB stick say), a directory, or an http://
or https:// cache such as https://cache.nixos.org. NARs may be
uncompressed or compressed with xz, zstd or bzip2.

Every narinfo of the closure is read first, and the import is refused
unless each path is signed by a trusted key (trove trust add NAME:KEY, in
Nix's format: cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
for the official cache) or is content-addressed with an address that
recomputes. Every NAR is checked against its narHash as it is unpacked.
Paths trove already has are skipped.

An http(s) cache that sends nothing for --timeout (waiting for a response,
or for the next bytes of one) fails the import, naming the URL; a large NAR
that keeps arriving never times out. What was not imported leaves nothing
behind, and paths already imported stay.

Seed one machine of a LAN this way; the others then fetch from it.`,
		Example: `  trove import-cache file:///media/usb/nix-cache /nix/store/<hash>-hello-2.12
  trove import-cache https://cache.nixos.org /nix/store/<hash>-hello-2.12
  trove import-cache ./cache ./result --no-check-sigs
  trove import-cache --timeout 5m https://slow.example.org /nix/store/<hash>-hello-2.12`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout %v: must be positive, such as 60s or 5m", timeout)
			}
			url := a.cacheURL(args[0])
			paths, err := a.parseStorePaths(args[1:])
			if err != nil {
				return err
			}
			if noCheckSigs {
				fmt.Fprintln(a.stderr, "trove: --no-check-sigs: believing whatever the cache says (NARs are still checked against its narinfos)")
			}
			req := localapi.ImportCacheRequest{URL: url, NoCheckSigs: noCheckSigs, Timeout: timeout}
			for _, p := range paths {
				req.Paths = append(req.Paths, p.Abs(a.storeDir))
			}
			r, err := call(cmd.Context(), a, localapi.ImportCache, req, nil)
			return a.reportImport(r.Added, r.Bytes, err)
		},
	}
	c.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "believe narinfos no trusted key signed (their NARs are still checked)")
	c.Flags().DurationVar(&timeout, "timeout", nixcache.DefaultImportTimeout, "fail if an http(s) cache sends nothing for this long")
	return c
}

// cacheURL turns a directory argument (or file://RELATIVE) into a file URL
// against the caller's directory; other URLs pass unchanged.
func (a *app) cacheURL(arg string) string {
	if rest, ok := strings.CutPrefix(arg, "file://"); ok {
		if rest != "" && !strings.HasPrefix(rest, "/") {
			return "file://" + a.abs(rest)
		}
		return arg
	}
	if !strings.Contains(arg, "://") {
		if fi, err := os.Stat(a.abs(arg)); err == nil && fi.IsDir() {
			return "file://" + a.abs(arg)
		}
	}
	return arg
}
