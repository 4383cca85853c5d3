package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
)

func newPeerCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "peer",
		Short: "Manage the trust group: the peers allowed to fetch from this machine",
		Long: `The trust group is the set of peers (by peer ID) allowed to fetch from this
agent. Everyone else is refused at connection time. Pair two machines by
running "trove peer allow" on each with the other's ID (from "trove id").`,
		Example: `  trove peer allow 12D3KooWQnT... --name laptop
  trove peer list
  trove peer remove 12D3KooWQnT...`,
		RunE: groupRunE,
	}
	var name string
	allow := &cobra.Command{
		Use:   "allow PEERID",
		Short: "Add a peer to the trust group",
		Long: `Add the peer with this ID (printed by "trove id" on that machine) to the
trust group, so it may fetch from this agent. With a running agent the change
takes effect at once.`,
		Example: `  trove peer allow 12D3KooWQnT... --name laptop`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.AllowPeer, localapi.PeerRequest{ID: args[0], Name: name}, nil)
			if err != nil {
				return err
			}
			id := r.ID
			fmt.Fprintf(a.stdout, "allowed %s%s\n", id, nameSuffix(name))
			return nil
		},
	}
	allow.Flags().StringVar(&name, "name", "", "a `NAME` for the peer, such as laptop")
	remove := &cobra.Command{
		Use:     "remove PEERID",
		Aliases: []string{"rm"},
		Short:   "Remove a peer from the trust group (and disconnect it)",
		Long: `Remove the peer from the trust group. A running agent closes its connections
at once and refuses it from then on.`,
		Example: `  trove peer remove 12D3KooWQnT...`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.RemovePeer, localapi.PeerRequest{ID: args[0]}, nil)
			if err != nil {
				return err
			}
			id := r.ID
			fmt.Fprintf(a.stdout, "removed %s\n", id)
			return nil
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the trust group",
		Long:    "List the peers in the trust group, with their names.",
		Example: `  trove peer list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.ListPeers, localapi.ListPeersRequest{}, nil)
			if err != nil {
				return err
			}
			out := r.Peers
			if asJSON {
				return writeJSON(a.stdout, out)
			}
			if len(out) == 0 {
				fmt.Fprintln(a.stderr, "the trust group is empty: pair a machine with trove peer allow PEERID")
			}
			for _, e := range out {
				fmt.Fprintf(a.stdout, "%s%s\n", e.ID, nameSuffix(e.Name))
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(allow, remove, list)
	return c
}

func nameSuffix(n string) string {
	if n == "" {
		return ""
	}
	return "\t" + n
}

func newStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's state: peer ID, addresses, peers, store size",
		Long: `Show the running agent's peer ID and addresses, how many peers are
connected, the store's size and path count, and transfers in flight.

An agent that is starting is waited for. Without an agent it says so and
exits 1 (with --json it prints {"running": false, "home": ...}); it does
not open the store, so it never stands in the way of an agent starting.`,
		Example: `  trove status
  trove status --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := call(cmd.Context(), a, localapi.Status, localapi.StatusRequest{}, nil)
			if errors.Is(err, agent.ErrNoAgent) && asJSON {
				home, _ := a.homeDir()
				if err := writeJSON(a.stdout, notRunning{Home: home}); err != nil {
					return err
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, st)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "peer ID:\t%s\n", st.PeerID)
			for i, addr := range st.Addrs {
				label := ""
				if i == 0 {
					label = "addresses:"
				}
				fmt.Fprintf(w, "%s\t%s\n", label, addr)
			}
			fmt.Fprintf(w, "peers:\t%d connected, %d in the trust group\n", st.PeersConnected, st.TrustGroup)
			fmt.Fprintf(w, "store:\t%d %s, %s\n", st.StorePaths, plural(st.StorePaths, "path", "paths"), humanBytes(st.StoreBytes))
			fmt.Fprintf(w, "transfers:\t%d in flight\n", st.Transfers)
			fmt.Fprintf(w, "uptime:\t%s\n", time.Duration(st.UptimeSeconds)*time.Second)
			if st.Public {
				fmt.Fprintf(w, "serving:\tPUBLIC (anyone may fetch)\n")
			}
			for _, f := range st.Follows {
				fmt.Fprintf(w, "following %s:\t%s\n", f.Name, followSummary(f))
				if f.State != "" {
					fmt.Fprintf(w, "\tnow %s\n", f.State)
				}
				if f.LastError != "" {
					fmt.Fprintf(w, "\tlast error (%s): %s\n", f.LastErrorAt.Format("15:04:05"), f.LastError)
				}
				if f.Hint != "" {
					fmt.Fprintf(w, "\t%s\n", f.Hint)
				}
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// notRunning is what `trove status --json` prints when no agent runs; a
// running agent's status (agent.Status) has "running": true.
type notRunning struct {
	Running bool   `json:"running"`
	Home    string `json:"home"`
}

func newPeersCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "peers",
		Short: "List connected and trusted peers with their traffic",
		Long: `List the running agent's peers: each connected peer and each member of the
trust group, with its name, addresses, transport, latency, bytes in and
out, and whether it is trusted. Needs a running agent (one that is
starting is waited for).`,
		Example: `  trove peers
  trove peers --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := call(cmd.Context(), a, localapi.Peers, localapi.PeersRequest{}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, ps)
			}
			if len(ps) == 0 {
				fmt.Fprintln(a.stderr, "no peers: none connected and the trust group is empty")
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PEER\tNAME\tSTATE\tTRANSPORT\tLATENCY\tIN\tOUT\tTRUSTED\tADDRESS")
			for _, p := range ps {
				state := "offline"
				if p.Connected {
					state = "connected"
				}
				addr := ""
				if len(p.Addrs) > 0 {
					addr = p.Addrs[0]
				}
				lat := "-"
				if p.Latency > 0 {
					lat = p.Latency.Round(time.Microsecond).String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", shortID(p.ID), p.Name, state, p.Transport, lat,
					humanBytes(uint64(p.BytesIn)), humanBytes(uint64(p.BytesOut)), p.Trusted, addr)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}

// followSummary says in one line where a followed configuration stands.
func followSummary(f agent.FollowStatus) string {
	var b strings.Builder
	switch {
	case !f.Activate:
		fmt.Fprintf(&b, "fetching only; newest known generation %d", f.Newest)
	case f.Current == 0:
		fmt.Fprintf(&b, "no generation active yet; newest known %d", f.Newest)
	default:
		fmt.Fprintf(&b, "generation %d active; newest known %d", f.Current, f.Newest)
	}
	if f.Announced > 0 {
		fmt.Fprintf(&b, " (%d announced, fetching its manifest)", f.Announced)
	}
	if f.HeldBack {
		fmt.Fprintf(&b, "; HELD BACK (it had %d)", f.Highest)
	}
	return b.String()
}
