package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/localapi"
)

func newSyncCmd(a *app) *cobra.Command {
	var (
		from        []string
		asJSON      bool
		noCheckSigs bool
		compress    string
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
what is missing. Chunks travel zstd-compressed from peers whose link
measures slower than 40 MB/s (--compress auto), and only those that shrink.

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
			req := localapi.SyncRequest{From: from, NoCheckSigs: noCheckSigs, Compress: compress}
			if _, err := fetch.ParseCompress(compress); err != nil {
				return usageError{err}
			}
			for _, arg := range args {
				p, err := a.pathOrConfig(arg)
				switch {
				case err != nil:
					return err
				case p == "":
					req.Configs = append(req.Configs, arg)
				default:
					req.Paths = append(req.Paths, p)
				}
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
				// What was fetched before an error is worth reporting too.
				if jerr := writeJSON(a.stdout, rep); jerr != nil && err == nil {
					err = jerr
				}
			}
			if err != nil || asJSON {
				return err
			}
			if rep.PathsFetched == 0 {
				fmt.Fprintf(a.stdout, "nothing to fetch: the closure (%d %s) is already here\n", rep.PathsTotal, plural(rep.PathsTotal, "path", "paths"))
				return nil
			}
			peers := rep.PeersUsed()
			fmt.Fprintf(a.stdout, "fetched %d %s: %s from %d %s, %s reused locally, %s resumed, in %.1fs\n",
				rep.PathsFetched, plural(rep.PathsFetched, "path", "paths"), humanBytes(uint64(rep.BytesFetched)),
				peers, plural(peers, "peer", "peers"), humanBytes(uint64(rep.BytesReused)),
				humanBytes(uint64(rep.BytesResumed)), rep.Seconds)
			return nil
		},
	}
	c.Flags().StringArrayVar(&from, "from", nil, "fetch from the peer at `MULTIADDR` (ending in /p2p/<id>; repeatable)")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary")
	c.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "believe unsigned path descriptions (testing only: unsafe)")
	c.Flags().StringVar(&compress, "compress", "auto", "ask peers for zstd-compressed chunks: `auto` (on links slower than 40 MB/s), always or never")
	return c
}

// syncProgress shows a sync's progress: a redrawn line on a terminal,
// a line per finished path when piped, nothing with --json.
type syncProgress struct {
	a         *app
	tty       bool
	quiet     bool
	lastPaths int
	drawn     bool
}

func newSyncProgress(a *app, asJSON bool) *syncProgress {
	return &syncProgress{a: a, tty: a.stderrIsTerminal(), quiet: asJSON}
}

func (p *syncProgress) update(s fetch.Progress) {
	if p.tty {
		rate := 0.0
		if secs := s.Elapsed.Seconds(); secs > 0 {
			rate = float64(s.BytesFetched) / secs
		}
		pct := 100.0
		if s.BytesTotal > 0 {
			pct = 100 * float64(s.BytesDone) / float64(s.BytesTotal)
		}
		line := fmt.Sprintf("%s %3.0f%%  %s / %s  %s/s  paths %d/%d  peers %d  %s",
			bar(pct, 20), pct, humanBytes(uint64(s.BytesDone)), humanBytes(uint64(s.BytesTotal)),
			humanBytes(uint64(rate)), s.PathsDone, s.PathsTotal, s.PeersUsed, s.Elapsed.Round(time.Second))
		fmt.Fprintf(p.a.stderr, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	if p.quiet || s.PathsDone == p.lastPaths {
		return
	}
	p.lastPaths = s.PathsDone
	fmt.Fprintf(p.a.stderr, "fetched %d/%d paths, %s of %s\n", s.PathsDone, s.PathsTotal, humanBytes(uint64(s.BytesDone)), humanBytes(uint64(s.BytesTotal)))
}

func (p *syncProgress) finish() {
	if p.drawn {
		fmt.Fprint(p.a.stderr, "\r\033[K")
	}
}

func bar(pct float64, width int) string {
	full := int(pct / 100 * float64(width))
	full = max(0, min(width, full))
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}
