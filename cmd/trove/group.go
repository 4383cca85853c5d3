package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
)

func newInviteCmd(a *app) *cobra.Command {
	var uses int
	var expires time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "invite",
		Short: "Print a token that lets another machine join this machine's group",
		Long: `Open an invitation and print its token (trove1-...). On the machine to add,
"trove join TOKEN" makes it a member of the group: every member trusts it, and
it trusts every member, with nothing to run on the others.

The token is a secret: whoever holds it may join, until it is used up or
expires. By default it admits one machine within an hour (--uses, --expires).
This machine keeps only a hash of it, and it is shown only this once. It
holds this machine's peer ID and addresses, so the joining machine must be
able to reach this one, and this machine's agent must be running.`,
		Example: `  trove invite
  trove invite --uses 15 --expires 30m     # a room of 16 machines
  trove invite list
  trove invite revoke 3fa2c1d0`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.Invite, localapi.InviteRequest{Uses: uses, Expires: expires}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, r)
			}
			fmt.Fprintln(a.stdout, r.Token)
			fmt.Fprintf(a.stderr, "invitation %s: admits %d machine(s) until %s; on each, run: trove join TOKEN\n",
				r.Invite.ID, r.Invite.Uses, r.Invite.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	c.Flags().IntVar(&uses, "uses", 1, "how many machines may join with the token (`N`)")
	c.Flags().DurationVar(&expires, "expires", time.Hour, "how long the token may be used: a `DURATION` such as 30m or 24h")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var listJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the invitations this machine has opened",
		Long: `List the invitations this machine remembers (open ones, and those closed in
the last day): ID, state (open, used, expired, revoked), uses, expiry. Tokens
are never shown again.`,
		Example: `  trove invite list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.ListInvites, localapi.ListInvitesRequest{}, nil)
			return show(a, listJSON, r.Invites, err, func(out []localapi.InviteInfo) error {
				if len(out) == 0 {
					fmt.Fprintln(a.stderr, "no invitations: open one with trove invite")
				}
				for _, iv := range out {
					fmt.Fprintf(a.stdout, "%s\t%s\t%d/%d used\texpires %s\n", iv.ID, iv.State, iv.Used, iv.Uses, iv.Expires.Local().Format(time.DateTime))
				}
				return nil
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Close an invitation before it is used up or expires",
		Long:    `Close the invitation with this ID (from trove invite list): its token is refused from then on.`,
		Example: `  trove invite revoke 3fa2c1d0`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd.Context(), a, localapi.RevokeInvite, localapi.RevokeInviteRequest{ID: args[0]}, nil)
			return a.printEach("revoked invitation %s", []string{args[0]}, err)
		},
	}
	c.AddCommand(list, revoke)
	return c
}

func newJoinCmd(a *app) *cobra.Command {
	var name string
	var asJSON bool
	c := &cobra.Command{
		Use:   "join TOKEN",
		Short: "Join a group with a token from trove invite",
		Long: `Make this machine a member of the group of the member that printed TOKEN
(with trove invite): it dials that member, presents the token, and learns
every member; every member learns of this machine. From then on they may
fetch from each other. The token is used up (or refused, saying why: used,
expired, revoked or wrong).

This machine is named --name in the group (default: its host name). With a
running agent the agent joins and connects to the members at once; otherwise
the command joins by itself and the agent connects when it starts.

TOKEN "-" reads the token from standard input, keeping it out of the
process list and the shell's history.`,
		Example: `  trove join trove1-ae3k...
  trove join - --name build-07 < token`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok := args[0]
			if tok == "-" {
				b, err := io.ReadAll(io.LimitReader(a.stdin, 4096))
				if err != nil {
					return err
				}
				tok = string(b)
			}
			r, err := call(cmd.Context(), a, localapi.Join, localapi.JoinRequest{Token: tok, Name: name}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, r)
			}
			fmt.Fprintf(a.stdout, "joined the group of %s: %d members\n", r.Inviter, r.Members)
			if !r.AgentRunning {
				fmt.Fprintln(a.stderr, "start trove agent to connect to them")
			}
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "the `NAME` this machine has in the group (default: its host name)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newGroupCmd(a *app) *cobra.Command {
	parent := &cobra.Command{
		Use:   "group",
		Short: "List and remove the members of this machine's group",
		Long: `A group is a trust group that every member keeps the same: machines join it
with trove invite and trove join, or are added with trove peer allow, and each
change is signed by the member that made it and passed from member to member.
Every member may fetch from every other; anyone else is refused.`,
		Example: `  trove group list
  trove group remove build-07`,
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the members",
		Long: `List the members of the group: peer ID, name, who added them and when, and
whether the running agent is connected to them. This machine comes first,
marked "self". A peer marked "local" was paired with trove peer allow before
groups existed: it is trusted here, and not shared with the group.`,
		Example: `  trove group list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.ListGroup, localapi.ListGroupRequest{}, nil)
			return show(a, asJSON, r.Members, err, func(out []agent.Member) error {
				if len(out) == 0 {
					fmt.Fprintln(a.stderr, "no group yet: add a machine with trove invite (here) and trove join (there)")
				}
				for _, m := range out {
					state := "not connected"
					switch {
					case m.Self:
						state = "self"
					case m.Connected:
						state = "connected"
					}
					by := "added by " + short(m.AddedBy) + " " + m.Added.Local().Format(time.DateTime)
					if m.Local {
						by = "local (peer allow before groups)"
					}
					fmt.Fprintf(a.stdout, "%s\t%s\t%s\t%s\n", m.ID, orDash(m.Name), state, by)
				}
				return nil
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var rmJSON bool
	remove := &cobra.Command{
		Use:     "remove PEER|NAME...",
		Aliases: []string{"rm"},
		Short:   "Remove members from the group, on every member",
		Long: `Remove each member (by peer ID or by name) from the group. Every member hears
of it within seconds and closes its connections to it; from then on it is
refused everywhere. A removed machine cannot add itself back: only another
member can (trove peer allow, or a new invitation).`,
		Example: `  trove group remove build-07
  trove group remove 12D3KooWQnT...`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.RemoveMember, localapi.RemoveMemberRequest{Peers: args}, nil)
			if rmJSON && err == nil {
				return writeJSON(a.stdout, r)
			}
			return a.printEach("removed %s", r.Removed, err)
		},
	}
	remove.Flags().BoolVar(&rmJSON, "json", false, "print JSON")
	return group(parent, list, remove)
}

func short(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
