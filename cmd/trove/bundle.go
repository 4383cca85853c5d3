package main

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newBundleCmd(a *app) *cobra.Command {
	return group(&cobra.Command{
		Use:   "bundle",
		Short: "Carry closures on a USB stick to machines the network does not reach",
		Long: `A bundle is one file holding closures, their path infos and the signed
manifests of configurations: make one on a connected machine, carry it,
and import it on an offline one, where every path is verified before it
becomes valid. trove agent --source DIR imports the bundles under DIR by
itself.`,
		Example: `  trove bundle create -o /media/usb/laptop.trove laptop
  trove bundle import /media/usb/laptop.trove
  trove bundle create --format nix-export -o closure.nixexport ./result`,
	}, newBundleCreateCmd(a), newBundleImportCmd(a))
}

func newBundleCreateCmd(a *app) *cobra.Command {
	var out, format string
	var asJSON bool
	c := &cobra.Command{
		Use:   "create -o FILE (NAME[@N] | STOREPATH)...",
		Short: "Write closures and configurations into one bundle file",
		Long: `Write a bundle holding the closure of each argument: a configuration
NAME (its newest generation known here) or NAME@N, whose signed manifest
goes in too, or a store path. Paths come references first, each NAR
checked against its narHash as it is written. The file appears under its
name only once complete.

On the importing machine, paths of a configuration are believed through
its manifest (the publisher's key must be trusted for NAME there: trove
trust add KEY --config NAME); other paths need a signature by a trusted
key or a content address. Bundle configurations rather than bare paths.
Name bundle files *.trove so that trove agent --source finds them.

--format nix-export writes what nix-store --export writes, for
nix-store --import (no signatures or manifests: Nix trusts the file).`,
		Example: `  trove bundle create -o /media/usb/laptop.trove laptop
  trove bundle create -o laptop-3.trove laptop@3 /nix/store/<hash>-extra-tools
  trove bundle create --format nix-export -o closure.nixexport ./result`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("say where to write the bundle with -o FILE")
			}
			if format != "trove" && format != "nix-export" {
				return usagef("--format %q: want trove or nix-export", format)
			}
			refs := make([]string, len(args))
			for i, arg := range args {
				p, err := a.pathOrConfig(arg)
				if err != nil {
					return usagef("%q is neither a store path nor a configuration NAME[@N]", arg)
				}
				refs[i] = cmp.Or(p, arg)
			}
			req := localapi.CreateBundleRequest{Output: a.fileArg(out), Format: format, Refs: refs}
			rep, err := call(cmd.Context(), a, localapi.CreateBundle, req, events{a: a}.show)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			if out != "-" {
				fmt.Fprintf(a.stdout, "wrote %s: %d %s, %s", out, rep.Paths, plural(rep.Paths, "path", "paths"), humanBytes(rep.NarBytes))
				if len(rep.Manifests) > 0 {
					fmt.Fprintf(a.stdout, ", %s", strings.Join(rep.Manifests, " "))
				}
				fmt.Fprintln(a.stdout)
			}
			if n := len(rep.Unvouched); n > 0 && format == "trove" {
				fmt.Fprintf(a.stderr, "trove: warning: %d %s (e.g. %s) %s in no manifest of the bundle, unsigned and not content-addressed: the importing machine will refuse the bundle unless it passes --no-check-sigs; bundle a published configuration instead (trove publish NAME PATH, then trove bundle create NAME)\n",
					n, plural(n, "path", "paths"), rep.Unvouched[0], plural(n, "is", "are"))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "output", "o", "", "write the bundle to `FILE` (- for standard output)")
	f.StringVar(&format, "format", "trove", "bundle format: trove, or nix-export for nix-store --import")
	f.BoolVar(&asJSON, "json", false, "print what went in as JSON")
	return c
}

func newBundleImportCmd(a *app) *cobra.Command {
	var noCheckSigs, asJSON bool
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Verify a bundle and add its paths and configurations",
		Long: `Read a bundle made by trove bundle create and add what this store lacks.
Before any path becomes valid, every path info in the bundle must be
vouched for: listed by a manifest in the bundle whose publisher's key is
trusted for that configuration (and not older than the newest generation
known here), signed by a trusted key, or content-addressed. Otherwise
nothing is imported. Each NAR is then checked against its narHash as it is
unpacked, references first, and the manifests are recorded last.

A bundle damaged or cut short part-way leaves only the complete, verified
paths before the damage (importing an intact copy adds the rest) and
records no configuration. Afterwards, trove activate NAME switches to an
imported configuration, offline.

--no-check-sigs believes every path in the bundle (for tests: anyone who
can hand you a file can then put anything under any store path name).`,
		Example: `  trove bundle import /media/usb/laptop.trove && trove activate laptop --run
  trove bundle import laptop.trove --json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.ImportBundleRequest{File: a.fileArg(args[0]), Shown: args[0], NoCheckSigs: noCheckSigs, Stdin: a.stdin}
			ev := events{a: a, imported: a.stderrIsTerminal() && !asJSON}
			rep, err := call(cmd.Context(), a, localapi.ImportBundle, req, ev.show)
			if err != nil {
				if rep != nil && rep.PathsAdded > 0 {
					fmt.Fprintf(a.stderr, "trove: added %d complete, verified %s (%s) before the error; importing an intact copy adds the rest\n",
						rep.PathsAdded, plural(rep.PathsAdded, "path", "paths"), humanBytes(rep.BytesAdded))
				}
				return err
			}
			for _, w := range rep.Warnings {
				fmt.Fprintf(a.stderr, "trove: warning: %s\n", w)
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			fmt.Fprintf(a.stdout, "added %d %s (%s), skipped %d already here (%s)\n",
				rep.PathsAdded, plural(rep.PathsAdded, "path", "paths"), humanBytes(rep.BytesAdded), rep.PathsSkipped, humanBytes(rep.BytesSkipped))
			for _, m := range rep.Manifests {
				switch {
				case m.Ignored != "":
					fmt.Fprintf(a.stderr, "trove: not recording %s generation %d: %s\n", m.Name, m.Generation, m.Ignored)
				case m.New:
					fmt.Fprintf(a.stdout, "recorded %s generation %d; switch to it with `trove activate %s --generation %d`\n", m.Name, m.Generation, m.Name, m.Generation)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "believe every path in the bundle (for tests; unsafe)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}
