package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
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
			var paths []nix.Path
			var refs []string
			for _, arg := range args {
				ps, perr := a.parseStorePaths([]string{arg})
				if perr == nil {
					paths = append(paths, ps...)
					continue
				}
				if _, _, err := manifest.ParseRef(arg); err != nil {
					return perr
				}
				refs = append(refs, arg)
			}
			froms, err := agent.ParsePeerAddrs(from)
			if err != nil {
				return usageError{err}
			}
			if noCheckSigs {
				fmt.Fprintln(a.stderr, "trove: WARNING: --no-check-sigs: believing every path description a peer sends; any peer can make any content valid under any name")
			}
			return a.withNode(cmd.Context(), froms, func(s *store.Store, n *p2p.Node) error {
				keys, err := manifest.LoadKeyring(manifest.TrustedKeysPath(s.Home()))
				if err != nil {
					return err
				}
				if a.agent != nil {
					defer a.agent.BeginTransfer()()
				}
				show := newSyncProgress(a, asJSON)
				opts := fetch.Options{Keys: keys, NoCheckSigs: noCheckSigs, Progress: show.update, Logger: a.log}
				if len(refs) > 0 {
					h := manifest.OpenHistory(s.Home(), keys)
					if a.agent != nil {
						h = a.agent.History
					}
					vouched := map[nix.PathHash]*nix.PathInfo{}
					for _, ref := range refs {
						name, gen, _ := manifest.ParseRef(ref)
						m, err := fetch.ResolveManifest(cmd.Context(), n, h, name, gen)
						if err != nil {
							return err
						}
						fmt.Fprintf(a.stderr, "%s: generation %d, %d paths, published by %s\n", name, m.Generation, len(m.Paths), m.Publisher.Name)
						for k, v := range m.Vouched() {
							vouched[k] = v
						}
						paths = append(paths, m.Root)
					}
					opts.Vouched = vouched
				}
				rep, err := fetch.New(s, n, opts).Fetch(cmd.Context(), paths)
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
			})
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

// withNode runs fn with a store and a p2p node: the agent's, inside an
// agent; else the command goes to a running agent; else a short-lived node
// with this home's identity, connected to froms and the configured peers.
func (a *app) withNode(ctx context.Context, froms []peer.AddrInfo, fn func(*store.Store, *p2p.Node) error) error {
	if a.agent != nil {
		for _, ai := range froms {
			if err := a.agent.Node.Connect(ctx, ai); err != nil {
				return fmt.Errorf("cannot reach %s: %w", ai.ID, err)
			}
		}
		return a.withStore(func(s *store.Store) error { return fn(s, a.agent.Node) })
	}
	return a.withStore(func(s *store.Store) error {
		home := s.Home()
		fc, err := agent.LoadConfig(home)
		if err != nil {
			return err
		}
		statics, err := agent.ParsePeerAddrs(fc.Agent.Peers)
		if err != nil {
			return err
		}
		trust, err := agent.LoadTrust(home)
		if err != nil {
			return err
		}
		key, err := p2p.LoadOrCreateKey(filepath.Join(home, "keys"))
		if err != nil {
			return err
		}
		mdns := fc.Agent.MDNS == nil || *fc.Agent.MDNS
		n, err := p2p.New(ctx, p2p.Config{
			Key: key, Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
			Trust: trust, Content: p2p.StoreContent{Store: s}, MDNS: mdns, Logger: a.log,
		})
		if err != nil {
			return err
		}
		defer n.Close()
		dialed := 0
		for _, ai := range append(froms, statics...) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := n.Connect(cctx, ai)
			cancel()
			if err != nil {
				fmt.Fprintf(a.stderr, "trove: cannot reach %s: %v\n", ai.ID, err)
				continue
			}
			dialed++
		}
		if dialed == 0 && mdns {
			// Give LAN discovery a moment to find a trusted peer.
			deadline := time.Now().Add(3 * time.Second)
			for len(n.ConnectedPeers()) == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if len(n.ConnectedPeers()) == 0 {
			return fmt.Errorf("no peers to fetch from: give one with --from MULTIADDR, add peers to config.toml, or run `trove agent`")
		}
		return fn(s, n)
	})
}
