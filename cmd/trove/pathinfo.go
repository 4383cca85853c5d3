package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/trove-p2p/trove/nix"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
)

func newPathInfoCmd(a *app) *cobra.Command {
	var asJSON, recursive, size, closureSize, sigs, all bool
	c := &cobra.Command{
		Use:   "path-info [flags] STOREPATH...",
		Short: "Show what the store knows about store paths",
		Long: `Show the store paths given (or, with -r, their closures; with --all, every
valid path), like nix path-info: references before the paths that refer to
them, one per line, with -s the NAR size and with -S the closure size in
bytes as further columns.

With --json, print instead the JSON array that Nix 2.8's nix path-info --json
prints, sorted by path: path, narHash (SRI form), narSize, references, ca,
closureSize (only with -S), deriver, registrationTime, ultimate, signatures.

A path that is not valid in the store is an error.`,
		Example: `  trove path-info /nix/store/<hash>-src
  trove path-info -rsS ./result
  trove path-info --json -r <hash>-src | jq '.[].narHash'
  trove path-info --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usagef("give store paths or --all, not both or neither; usage: %s", cmd.UseLine())
			}
			paths, err := a.parseStorePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.PathInfo, localapi.PathInfoRequest{
				Paths: a.absPaths(paths), All: all, Recursive: recursive, ClosureSize: closureSize}, nil)
			if err != nil {
				return err
			}
			if asJSON {
				slices.SortFunc(r.Infos, func(x, y nix.NixPathInfo) int { return strings.Compare(x.Path, y.Path) })
				return writeJSON(a.stdout, r.Infos)
			}
			return a.printPathInfoPlain(r.Infos, size, closureSize, sigs)
		},
	}
	f := c.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON, as nix path-info --json")
	f.BoolVarP(&recursive, "recursive", "r", false, "show the closures of the paths")
	f.BoolVarP(&size, "size", "s", false, "show each path's NAR size")
	f.BoolVarP(&closureSize, "closure-size", "S", false, "show each path's closure size (the sum of the NAR sizes of its closure)")
	f.BoolVar(&sigs, "sigs", false, "show signatures, content address and whether the path was made here (ultimate)")
	f.BoolVar(&all, "all", false, "show every valid path in the store")
	return c
}

// selectPaths returns the infos of paths (or of every valid path with all),
// with their closures when recursive, references first.
// absPaths renders store paths for a request.
func (a *app) absPaths(paths []nix.Path) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = p.Abs(a.storeDir)
	}
	return out
}

func (a *app) printPathInfoPlain(infos []nix.NixPathInfo, size, closure, sigs bool) error {
	width := 0
	for _, pi := range infos {
		width = max(width, len(pi.Path))
	}
	var b strings.Builder
	for _, pi := range infos {
		b.Reset()
		p := pi.Path
		b.WriteString(p)
		if size || closure || sigs {
			b.WriteString(strings.Repeat(" ", width-len(p)))
		}
		if size {
			fmt.Fprintf(&b, "\t%11d", pi.NarSize)
		}
		if closure {
			fmt.Fprintf(&b, "\t%11d", pi.ClosureSize)
		}
		if sigs {
			var ss []string
			if pi.Ultimate {
				ss = append(ss, "ultimate")
			}
			if pi.CA != "" {
				ss = append(ss, "ca:"+pi.CA)
			}
			ss = append(ss, pi.Signatures...)
			b.WriteString("\t" + strings.Join(ss, " "))
		}
		b.WriteByte('\n')
		if _, err := a.stdout.Write([]byte(b.String())); err != nil {
			return err
		}
	}
	return nil
}
