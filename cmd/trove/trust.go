package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newTrustCmd(a *app) *cobra.Command {
	parent := &cobra.Command{
		Use:   "trust",
		Short: "Manage the public keys whose signatures make paths believable",
		Long: `A path fetched from a peer is believed only if a trusted key signed it (or it
is content-addressed). Keys are in Nix's format, NAME:BASE64, the same as
Nix's trusted-public-keys and what nix-store --generate-binary-cache-key or
trove key generate print. They are kept in $TROVE_HOME/trusted-keys.`,
		Example: `  trove trust add cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
  trove trust list
  trove trust remove cache.nixos.org-1`,
	}
	var configs []string
	add := &cobra.Command{
		Use:   "add NAME:BASE64KEY...",
		Short: "Trust public keys",
		Long: `Trust each public key (NAME:BASE64 of 32 bytes); a key with the same name is
replaced. A trusted key vouches for the store paths it signs. With --config
NAME (repeatable, or "*" for any) it may also publish those configurations;
a manifest from any other key is refused.`,
		Example: `  trove trust add laptop-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0=
  trove trust add laptop-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0= --config laptop`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.TrustKeys, localapi.TrustKeysRequest{Keys: args, Configs: configs}, nil)
			format := "trusted %s"
			if len(configs) > 0 {
				format += ", also to publish " + strings.ReplaceAll(strings.Join(configs, ", "), "%", "%%")
			}
			return a.printEach(format, r.Names, err)
		},
	}
	add.Flags().StringArrayVar(&configs, "config", nil, "also trust the key to publish configuration `NAME` (repeatable; * for any)")
	remove := &cobra.Command{
		Use:     "remove NAME...",
		Aliases: []string{"rm"},
		Short:   "Stop trusting keys",
		Long:    "Stop trusting the keys with these names.",
		Example: `  trove trust remove laptop-1`,
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.UntrustKeys, localapi.UntrustKeysRequest{Names: args}, nil)
			return a.printEach("removed %s", r.Names, err)
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List trusted keys",
		Long:    "List the trusted public keys, one NAME:BASE64 per line.",
		Example: `  trove trust list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.ListKeys, localapi.ListKeysRequest{}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				out := []string{}
				for _, k := range r.Keys {
					out = append(out, k.Key)
				}
				return writeJSON(a.stdout, out)
			}
			if len(r.Keys) == 0 {
				fmt.Fprintln(a.stderr, "no trusted keys: add one with trove trust add NAME:BASE64KEY")
			}
			for _, k := range r.Keys {
				if len(k.Configs) > 0 {
					fmt.Fprintf(a.stdout, "%s\tconfigs: %s\n", k.Key, strings.Join(k.Configs, ","))
				} else {
					fmt.Fprintln(a.stdout, k.Key)
				}
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return group(parent, add, remove, list)
}

func newKeyCmd(a *app) *cobra.Command {
	parent := &cobra.Command{
		Use:   "key",
		Short: "Make signing keys",
		Long: `Make signing keys in Nix's format, interchangeable with
nix-store --generate-binary-cache-key.`,
		Example: `  trove key generate laptop-1`,
	}
	var out string
	gen := &cobra.Command{
		Use:   "generate NAME",
		Short: "Generate a signing key pair and print its public key",
		Long: `Generate an Ed25519 key pair named NAME. The secret key is written (mode
0600) to $TROVE_HOME/keys/NAME.secret, or to --out; the public key
(NAME:BASE64) is printed, to give to "trove trust add" on other machines.`,
		Example: `  trove key generate laptop-1
  trove key generate laptop-1 --out ./laptop-1.secret`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.GenerateKeyRequest{Name: args[0], File: a.abs(out)}
			r, err := call(cmd.Context(), a, localapi.GenerateKey, req, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "secret key written to %s\n", r.File)
			fmt.Fprintln(a.stdout, r.Public)
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "out", "o", "", "write the secret key to `FILE`")
	return group(parent, gen)
}

func newPeerCmd(a *app) *cobra.Command {
	parent := &cobra.Command{
		Use:   "peer",
		Short: "Manage the trust group: the peers allowed to fetch from this machine",
		Long: `The trust group is the set of peers (by peer ID) allowed to fetch from this
agent. Everyone else is refused at connection time. The easy way to add
machines is "trove invite" on a member and "trove join TOKEN" on each new
one (see "trove group"). "trove peer allow" adds one peer by its ID (from
"trove id"), as a member of the whole group: every member learns of it.`,
		Example: `  trove peer allow 12D3KooWQnT... --name laptop
  trove peer list
  trove peer remove 12D3KooWQnT...`,
	}
	var name string
	allow := &cobra.Command{
		Use:   "allow PEERID",
		Short: "Add a peer to the trust group",
		Long: `Add the peer with this ID (printed by "trove id" on that machine) to the
group, so it may fetch from this agent and every other member: the change is
signed by this machine and passed to every member. With a running agent it
takes effect at once; otherwise when the agent starts. The peer itself must
also allow a member (or join with an invitation) to fetch from the group.`,
		Example: `  trove peer allow 12D3KooWQnT... --name laptop`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.AllowPeer, localapi.PeerRequest{ID: args[0], Name: name}, nil)
			if err != nil {
				return err
			}
			return a.printEach("allowed %s", []string{r.ID + nameSuffix(name)}, nil)
		},
	}
	allow.Flags().StringVar(&name, "name", "", "a `NAME` for the peer, such as laptop")
	remove := &cobra.Command{
		Use:     "remove PEERID",
		Aliases: []string{"rm"},
		Short:   "Remove a peer from the group (and disconnect it)",
		Long: `Remove the peer from the group, as trove group remove does: every member
hears of it, closes its connections to it and refuses it from then on.`,
		Example: `  trove peer remove 12D3KooWQnT...`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.RemovePeer, localapi.PeerRequest{ID: args[0]}, nil)
			if err != nil {
				return err
			}
			return a.printEach("removed %s", []string{r.ID}, nil)
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
			return show(a, asJSON, r.Peers, err, func(out []localapi.TrustedPeer) error {
				if len(out) == 0 {
					fmt.Fprintln(a.stderr, "the trust group is empty: pair a machine with trove peer allow PEERID")
				}
				for _, e := range out {
					fmt.Fprintf(a.stdout, "%s%s\n", e.ID, nameSuffix(e.Name))
				}
				return nil
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return group(parent, allow, remove, list)
}

func nameSuffix(n string) string {
	if n == "" {
		return ""
	}
	return "\t" + n
}

func newIDCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "id",
		Short: "Print this machine's peer ID and addresses, to pair with other machines",
		Long: `Print this agent's peer ID and the addresses it listens on. Give them to
another machine's "trove peer allow" (the ID) and "--peer" (an address) to
pair the two. The identity key is created on first use in $TROVE_HOME/keys.

With a running agent the addresses are the live ones; otherwise they are
the configured listen addresses.`,
		Example: `  trove id
  trove id --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := call(cmd.Context(), a, localapi.ID, localapi.IDRequest{}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, out)
			}
			fmt.Fprintln(a.stdout, out.ID)
			if !out.Running {
				fmt.Fprintln(a.stderr, "(no agent running: these are the addresses it will listen on)")
			}
			for _, addr := range out.Addrs {
				fmt.Fprintln(a.stdout, addr)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
