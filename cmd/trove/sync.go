package main

import (
	"fmt"

	"github.com/trove-p2p/trove/fetch"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/manifest"
)

func newSyncCmd(a *app) *cobra.Command {
	var (
		from        []string
		asJSON      bool
		noCheckSigs bool
	)
	c := &cobra.Command{
		Use:   "sync (STOREPATH | NAME[@N])...",
		Short: "Fetch closures or configurations from peers, verified",
		Long: `Make the store hold the whole closure of each STOREPATH, fetched from
whichever peers have its parts, with every byte verified. For a
configuration NAME (or NAME@N), first get its newest (or Nth) signed
manifest from the peers, verify it, and fetch its closure.

A path is believed only if it is signed by a trusted key (trove trust add),
or content-addressed so that its name recomputes from its content. Chunks
already anywhere in the local store are reused; the rest are fetched from
all peers that have them at once, each chunk checked against its hash on
arrival; a peer that sends bad data is dropped and its work goes to others.
An interrupted sync keeps what it verified: running it again fetches only
what is missing.

With a running agent the sync runs inside it, using its peers. Without one,
trove starts a short-lived node with this home's identity that dials the
--from peers and those in config.toml, and looks for peers on the LAN.

On a terminal a progress line shows bytes, rate, paths and peers; piped,
only a line per finished path; --json prints a summary when done.`,
		Example: `  trove sync /nix/store/<hash>-hello-2.12
  trove sync --from /ip4/192.168.1.7/tcp/4807/p2p/12D3KooW... ./result
  trove sync --json /nix/store/<hash>-system
  trove sync laptop@4`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.SyncRequest{From: from, NoCheckSigs: noCheckSigs}
			for _, arg := range args {
				ps, perr := a.parseStorePaths([]string{arg})
				if perr == nil {
					req.Paths = append(req.Paths, ps[0].Abs(a.storeDir))
					continue
				}
				if _, _, err := manifest.ParseRef(arg); err != nil {
					return perr
				}
				req.Configs = append(req.Configs, arg)
			}
			if _, err := agent.ParsePeerAddrs(from); err != nil {
				return usageError{err}
			}
			if noCheckSigs {
				fmt.Fprintln(a.stderr, "trove: WARNING: --no-check-sigs: believing every path description a peer sends; any peer can make any content valid under any name")
			}
			show := newSyncProgress(a, asJSON)
			rep, err := call(cmd.Context(), a, localapi.Sync, req, events{a: a, sync: show}.show)
			show.finish()
			if asJSON && rep != nil {
				if jerr := writeJSON(a.stdout, rep); jerr != nil && err == nil {
					err = jerr
				}
			}
			if err != nil {
				return err
			}
			if !asJSON {
				if rep.PathsFetched == 0 {
					fmt.Fprintf(a.stdout, "nothing to fetch: the closure (%d %s) is already here\n", rep.PathsTotal, plural(rep.PathsTotal, "path", "paths"))
				} else {
					fmt.Fprintf(a.stdout, "fetched %d %s: %s from %d %s, %s reused locally, %s resumed, in %.1fs\n",
						rep.PathsFetched, plural(rep.PathsFetched, "path", "paths"), humanBytes(uint64(rep.BytesFetched)),
						peersUsed(rep), plural(peersUsed(rep), "peer", "peers"), humanBytes(uint64(rep.BytesReused)),
						humanBytes(uint64(rep.BytesResumed)), rep.Seconds)
				}
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&from, "from", nil, "fetch from the peer at `MULTIADDR` (ending in /p2p/<id>; repeatable)")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary")
	c.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "believe unsigned path descriptions (testing only: unsafe)")
	return c
}

func peersUsed(r *fetch.Report) int {
	n := 0
	for _, p := range r.Peers {
		if p.BytesFetched > 0 {
			n++
		}
	}
	return n
}
