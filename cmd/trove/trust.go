package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newTrustCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "trust",
		Short: "Manage the public keys whose signatures make paths believable",
		Long: `A path fetched from a peer is believed only if a trusted key signed it (or it
is content-addressed). Keys are in Nix's format, NAME:BASE64, the same as
Nix's trusted-public-keys and what nix-store --generate-binary-cache-key or
trove key generate print. They are kept in $TROVE_HOME/trusted-keys.`,
		Example: `  trove trust add cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
  trove trust list
  trove trust remove cache.nixos.org-1`,
		RunE: groupRunE,
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
			for _, name := range r.Names {
				if len(configs) > 0 {
					fmt.Fprintf(a.stdout, "trusted %s, also to publish %s\n", name, strings.Join(configs, ", "))
				} else {
					fmt.Fprintf(a.stdout, "trusted %s\n", name)
				}
			}
			return err
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
			for _, name := range r.Names {
				fmt.Fprintf(a.stdout, "removed %s\n", name)
			}
			return err
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
	c.AddCommand(add, remove, list)
	return c
}

func newKeyCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "Make signing keys",
		Long: `Make signing keys in Nix's format, interchangeable with
nix-store --generate-binary-cache-key.`,
		Example: `  trove key generate laptop-1`,
		RunE:    groupRunE,
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
			req := localapi.GenerateKeyRequest{Name: args[0]}
			if out != "" {
				req.File = a.abs(out)
			}
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
	c.AddCommand(gen)
	return c
}
