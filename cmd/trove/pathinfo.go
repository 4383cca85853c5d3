package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/trove-p2p/trove/nix"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/store"
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
			return a.withStore(func(s *store.Store) error {
				infos, err := selectPaths(cmd.Context(), s, paths, all, recursive)
				if err != nil {
					return err
				}
				if asJSON {
					return a.printPathInfoJSON(s, infos, closureSize)
				}
				return a.printPathInfoPlain(s, infos, size, closureSize, sigs)
			})
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
func selectPaths(ctx context.Context, s *store.Store, paths []nix.Path, all, recursive bool) ([]*nix.PathInfo, error) {
	if all {
		err := s.Paths(ctx, func(pi *nix.PathInfo) error {
			paths = append(paths, pi.Path)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		if _, err := s.Lookup(p); err != nil {
			return nil, err
		}
	}
	// Closure gives references-first order; for the non-recursive case keep
	// just the paths asked for, in that order.
	roots := slices.Clone(paths)
	slices.SortFunc(roots, nix.Path.Compare)
	roots = slices.Compact(roots)
	infos, err := s.Closure(roots...)
	if err != nil || recursive || all {
		return infos, err
	}
	asked := make(map[nix.Path]bool, len(roots))
	for _, p := range roots {
		asked[p] = true
	}
	return slices.DeleteFunc(infos, func(pi *nix.PathInfo) bool { return !asked[pi.Path] }), nil
}

// closureSize is the sum of the NAR sizes of p's closure.
func closureSize(s *store.Store, p nix.Path) (uint64, error) {
	infos, err := s.Closure(p)
	var sum uint64
	for _, pi := range infos {
		sum += pi.NarSize
	}
	return sum, err
}

func (a *app) printPathInfoJSON(s *store.Store, infos []*nix.PathInfo, withClosureSize bool) error {
	out := make([]nix.NixPathInfo, 0, len(infos))
	for _, pi := range infos {
		n := pi.ToNix(s.StoreDir())
		if withClosureSize {
			var err error
			if n.ClosureSize, err = closureSize(s, pi.Path); err != nil {
				return err
			}
		}
		out = append(out, n)
	}
	// Nix prints a set of paths, so in path order.
	slices.SortFunc(out, func(x, y nix.NixPathInfo) int { return strings.Compare(x.Path, y.Path) })
	return writeJSON(a.stdout, out)
}

// printPathInfoPlain lays out columns as nix path-info does: the path,
// padded to the longest one when columns follow, then a tab and an
// 11-wide number per size column.
func (a *app) printPathInfoPlain(s *store.Store, infos []*nix.PathInfo, size, closure, sigs bool) error {
	width := 0
	for _, pi := range infos {
		width = max(width, len(pi.Path.Abs(s.StoreDir())))
	}
	var b strings.Builder
	for _, pi := range infos {
		b.Reset()
		p := pi.Path.Abs(s.StoreDir())
		b.WriteString(p)
		if size || closure || sigs {
			b.WriteString(strings.Repeat(" ", width-len(p)))
		}
		if size {
			fmt.Fprintf(&b, "\t%11d", pi.NarSize)
		}
		if closure {
			n, err := closureSize(s, pi.Path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "\t%11d", n)
		}
		if sigs {
			var ss []string
			if pi.Ultimate {
				ss = append(ss, "ultimate")
			}
			if pi.CA != "" {
				ss = append(ss, "ca:"+pi.CA)
			}
			ss = append(ss, pi.Sigs...)
			b.WriteString("\t" + strings.Join(ss, " "))
		}
		b.WriteByte('\n')
		if _, err := a.stdout.Write([]byte(b.String())); err != nil {
			return err
		}
	}
	return nil
}
