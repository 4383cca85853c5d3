package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixcache"
)

// The commands on store paths: init, add, imports, path-info, closure,
// verify, and garbage collection with its roots.

func newInitCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the trove home",
		Long: `Create the trove home: the store database (db/) and the directory that holds
the store paths' trees (store/). Running it again on an existing home changes
nothing and says so. Other commands create the home too when it is missing;
init is for doing it on purpose and seeing where it went.

The home is --home, else $TROVE_HOME, else $XDG_DATA_HOME/trove
(~/.local/share/trove), or /var/lib/trove when run as root. A home keeps the
--store-dir it was created with, and its store: trove's embedded one
(the default), or with --store nix the machine's Nix store, which trove
then shares as it is and delivers into (its own database keeps only chunk
indexes and resume state).`,
		Example: `  trove init
  trove init --store nix
  trove --home /srv/trove --store-dir /nix/store init
  TROVE_HOME=$(mktemp -d) trove init`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.Init, localapi.InitRequest{}, nil)
			if err != nil {
				return err
			}
			if r.Created {
				fmt.Fprintf(a.stdout, "created trove home %s (store dir %s, %s store)\n", r.Home, r.StoreDir, r.Store)
				return nil
			}
			fmt.Fprintf(a.stdout, "trove home %s already exists (store dir %s, %s store, %d %s, %s)\n",
				r.Home, r.StoreDir, r.Store, r.Paths, plural(r.Paths, "path", "paths"), humanBytes(r.Bytes))
			return nil
		},
	}
}

func newAddCmd(a *app) *cobra.Command {
	var name string
	var root bool
	c := &cobra.Command{
		Use:   "add PATH...",
		Short: "Add files or trees to the store and print their store paths",
		Long: `Add each PATH (a file, directory or symlink, which is not followed) to the
store as a content-addressed store path named after PATH's base name, and
print the store path: exactly the path nix-store --add PATH prints, computed
against --store-dir. Adding a path that is already there changes nothing.

Added paths are not GC roots: trove gc removes them unless they are roots
(--root, or trove root add) or in the closure of one.`,
		Example: `  trove add ./src
  trove add --root ./config.json
  trove add --name hello-src ./hello`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.AddRequest{Paths: a.absAll(args), Shown: args, Name: name, Root: root}
			r, err := call(cmd.Context(), a, localapi.Add, req, nil)
			return a.printEach("%s", r.Paths, err)
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "store path `NAME` instead of PATH's base name (one PATH only)")
	c.Flags().BoolVar(&root, "root", false, "also make each added path a GC root")
	return c
}

func newImportNixCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "import-nix STOREPATH...",
		Short: "Copy closures from the local Nix store into trove",
		Long: `Copy each STOREPATH and everything it references from the local Nix store
into trove, references first, keeping narHash, narSize, references, deriver,
signatures and content address. Metadata comes from nix path-info --json -r
and contents from nix-store --dump; every NAR is checked against Nix's
narHash on the way in. Paths trove already has are skipped.

This needs the Nix command-line tools (on Debian: apt-get install nix-bin),
and the trove home must use the same --store-dir as that Nix store.
Progress goes to standard error when it is a terminal; at the end trove
prints how many paths and bytes it imported.`,
		Example: `  trove import-nix /nix/store/<hash>-hello-2.12
  trove import-nix ./result
  trove import-nix $(nix-build '<nixpkgs>' -A hello --no-out-link)`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Arguments that parse as store paths go to Nix in full; anything
			// else (a ./result symlink, say) Nix resolves itself.
			paths := slices.Clone(args)
			for i, arg := range args {
				if p, err := a.storePath(arg); err == nil {
					paths[i] = p
				}
			}
			ev := events{a: a, imported: a.stderrIsTerminal()}
			r, err := call(cmd.Context(), a, localapi.ImportNix, localapi.ImportNixRequest{Paths: paths}, ev.show)
			return a.reportImport(r, err)
		},
	}
}

func (a *app) reportImport(r localapi.ImportResponse, err error) error {
	n := r.Added
	switch {
	case err != nil:
		if n > 0 {
			fmt.Fprintf(a.stderr, "trove: imported %d %s (%s) before the error; running the command again resumes\n",
				n, plural(n, "path", "paths"), humanBytes(r.Bytes))
		}
		return err
	case n == 0:
		fmt.Fprintln(a.stdout, "nothing to import: every path of the closure is already in the store")
	default:
		fmt.Fprintf(a.stdout, "imported %d %s, %s\n", n, plural(n, "path", "paths"), humanBytes(r.Bytes))
	}
	return nil
}

func newImportCacheCmd(a *app) *cobra.Command {
	var noCheckSigs bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "import-cache URL STOREPATH...",
		Short: "Copy closures from a Nix binary cache into trove",
		Long: `Copy each STOREPATH and everything it references from the Nix binary cache
at URL into trove, references first, keeping narHash, references, deriver,
signatures and content address. URL is file:///DIR (a cache written by
nix copy --to file:///DIR, on a USB stick say), a directory, or an http://
or https:// cache such as https://cache.nixos.org. NARs may be
uncompressed or compressed with xz, zstd or bzip2.

Every narinfo of the closure is read first, and the import is refused
unless each path is signed by a trusted key (trove trust add NAME:KEY, in
Nix's format: cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
for the official cache) or is content-addressed with an address that
recomputes. Every NAR is checked against its narHash as it is unpacked.
Paths trove already has are skipped.

An http(s) cache that sends nothing for --timeout (waiting for a response,
or for the next bytes of one) fails the import, naming the URL; a large NAR
that keeps arriving never times out. What was not imported leaves nothing
behind, and paths already imported stay.

Seed one machine of a LAN this way; the others then fetch from it.`,
		Example: `  trove import-cache file:///media/usb/nix-cache /nix/store/<hash>-hello-2.12
  trove import-cache https://cache.nixos.org /nix/store/<hash>-hello-2.12
  trove import-cache ./cache ./result --no-check-sigs
  trove import-cache --timeout 5m https://slow.example.org /nix/store/<hash>-hello-2.12`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout %v: must be positive, such as 60s or 5m", timeout)
			}
			paths, err := a.storePaths(args[1:])
			if err != nil {
				return err
			}
			if noCheckSigs {
				fmt.Fprintln(a.stderr, "trove: --no-check-sigs: believing whatever the cache says (NARs are still checked against its narinfos)")
			}
			req := localapi.ImportCacheRequest{URL: a.cacheURL(args[0]), Paths: paths, NoCheckSigs: noCheckSigs, Timeout: timeout}
			r, err := call(cmd.Context(), a, localapi.ImportCache, req, nil)
			return a.reportImport(r, err)
		},
	}
	c.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "believe narinfos no trusted key signed (their NARs are still checked)")
	c.Flags().DurationVar(&timeout, "timeout", nixcache.DefaultImportTimeout, "fail if an http(s) cache sends nothing for this long")
	return c
}

// cacheURL turns a directory argument (or file://RELATIVE) into a file URL
// against the caller's directory; other URLs pass unchanged.
func (a *app) cacheURL(arg string) string {
	if rest, ok := strings.CutPrefix(arg, "file://"); ok && rest != "" && !strings.HasPrefix(rest, "/") {
		return "file://" + a.abs(rest)
	}
	if !strings.Contains(arg, "://") {
		if fi, err := os.Stat(a.abs(arg)); err == nil && fi.IsDir() {
			return "file://" + a.abs(arg)
		}
	}
	return arg
}

// pathsOrAll checks the arguments of a command that takes store paths or
// --all, and reads the paths.
func (a *app) pathsOrAll(cmd *cobra.Command, all bool, args []string) ([]string, error) {
	if all == (len(args) > 0) {
		return nil, usagef("give store paths or --all, not both or neither; usage: %s", cmd.UseLine())
	}
	return a.storePaths(args)
}

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
			paths, err := a.pathsOrAll(cmd, all, args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.PathInfo, localapi.PathInfoRequest{
				Paths: paths, All: all, Recursive: recursive, ClosureSize: closureSize}, nil)
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

func (a *app) printPathInfoPlain(infos []nix.NixPathInfo, size, closure, sigs bool) error {
	width := 0
	for _, pi := range infos {
		width = max(width, len(pi.Path))
	}
	var b strings.Builder
	for _, pi := range infos {
		b.Reset()
		b.WriteString(pi.Path)
		if size || closure || sigs {
			b.WriteString(strings.Repeat(" ", width-len(pi.Path)))
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
			b.WriteString("\t" + strings.Join(append(ss, pi.Signatures...), " "))
		}
		b.WriteByte('\n')
		if _, err := a.stdout.Write([]byte(b.String())); err != nil {
			return err
		}
	}
	return nil
}

func newClosureCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "closure STOREPATH...",
		Short: "List the closure of store paths",
		Long: `List the closure of the STOREPATHs: the paths themselves and everything they
reference, directly or not, each once, like nix-store -qR. References come
before the paths that refer to them, so the list is an order in which the
paths can be copied or registered. With --json, print a JSON array of the
same paths in the same order.`,
		Example: `  trove closure /nix/store/<hash>-hello-2.12
  trove closure --json ./result`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := a.storePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.Closure, localapi.PathsRequest{Paths: paths}, nil)
			if err != nil {
				return err
			}
			return writeList(a.stdout, asJSON, r.Paths)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of store paths")
	return c
}

func newVerifyCmd(a *app) *cobra.Command {
	var asJSON, all bool
	c := &cobra.Command{
		Use:   "verify [--all | STOREPATH...]",
		Short: "Check stored paths against their hashes and references",
		Long: `Check the given store paths, or with --all every valid path: recompute each
path's NAR from its tree and compare its hash and size with the recorded
narHash and narSize, check that the tree's files, modes and symlinks are
unchanged, and check that every path it references is valid.

Every problem is listed, one per line, as "<store path>: <kind>: <detail>",
where kind is missing, corrupt or reference, and trove verify exits with
status 1. When all is well it prints how many paths it checked. With --json
it prints {"checked": N, "problems": [{"path", "kind", "detail"}...]}.`,
		Example: `  trove verify --all
  trove verify /nix/store/<hash>-hello-2.12
  trove verify --all --json | jq '.problems[].path'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := a.pathsOrAll(cmd, all, args)
			if err != nil {
				return err
			}
			rep, err := call(cmd.Context(), a, localapi.Verify, localapi.VerifyRequest{Paths: paths, All: all}, nil)
			err = show(a, asJSON, rep, err, func(rep localapi.VerifyReport) error {
				for _, vp := range rep.Problems {
					fmt.Fprintf(a.stdout, "%s: %s: %s\n", vp.Path, vp.Kind, vp.Detail)
				}
				if len(rep.Problems) == 0 {
					fmt.Fprintf(a.stdout, "checked %d %s, no problems\n", rep.Checked, plural(rep.Checked, "path", "paths"))
				}
				return nil
			})
			if n := len(rep.Problems); err == nil && n > 0 {
				fmt.Fprintf(a.stderr, "trove: %d %s found in %d checked %s\n",
					n, plural(n, "problem", "problems"), rep.Checked, plural(rep.Checked, "path", "paths"))
				return errReported
			}
			return err
		},
	}
	c.Flags().BoolVar(&all, "all", false, "check every valid path in the store")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return c
}

func newGCCmd(a *app) *cobra.Command {
	var asJSON, dryRun bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove the store paths no GC root needs, and spools no sync is using",
		Long: `Remove every store path that is not in the closure of a GC root (see trove
root), printing each removed path and then how many paths were removed and
how many bytes (NAR sizes) were freed. Paths that refer to others are removed
before what they refer to, so an interrupted gc leaves a consistent store.

Also remove the spools (partly fetched NARs, in $TROVE_HOME/partial) of syncs
that failed or were stopped, which a later sync would have resumed from, and
say how much disk they took. A spool that a running sync is using, in the
agent or in another trove process, is left alone.

With --dry-run, only print what would be removed. With --json, print
{"dryRun", "removed": [paths...], "bytesFreed", "spoolsRemoved",
"spoolBytesFreed", "spoolsInUse"} instead.`,
		Example: `  trove gc --dry-run
  trove gc
  trove gc --json | jq .bytesFreed`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := call(cmd.Context(), a, localapi.GC, localapi.GCRequest{DryRun: dryRun}, nil)
			if n := len(rep.Removed); err != nil && !dryRun && n > 0 {
				fmt.Fprintf(a.stderr, "trove: removed %d %s (%s) before the error\n", n, plural(n, "path", "paths"), humanBytes(rep.BytesFreed))
			}
			return show(a, asJSON, rep, err, func(rep localapi.GCReport) error {
				n, k, would := len(rep.Removed), rep.SpoolsRemoved, ""
				if dryRun {
					would = "would be "
				}
				a.printEach("%s", rep.Removed, nil)
				fmt.Fprintf(a.stdout, "%d %s %sremoved, %s %sfreed", n, plural(n, "path", "paths"), would, humanBytes(rep.BytesFreed), would)
				if k > 0 {
					fmt.Fprintf(a.stdout, "; %d %s of stopped syncs %sremoved, %s %sfreed", k, plural(k, "spool", "spools"), would, humanBytes(uint64(rep.SpoolBytesFreed)), would)
				}
				if u := rep.SpoolsInUse; u > 0 {
					fmt.Fprintf(a.stdout, "; %d %s in use by running syncs kept", u, plural(u, "spool", "spools"))
				}
				fmt.Fprintln(a.stdout)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be removed")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return c
}

// newRootsCmd is `trove root`: the explicit GC roots.
func newRootsCmd(a *app) *cobra.Command {
	edit := func(op localapi.Op[localapi.PathsRequest, localapi.PathsResponse], done string, c *cobra.Command) *cobra.Command {
		c.Args = minArgs(1)
		c.RunE = func(cmd *cobra.Command, args []string) error {
			paths, err := a.storePaths(args)
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, op, localapi.PathsRequest{Paths: paths}, nil)
			return a.printEach(done+" GC root %s", r.Paths, err)
		}
		return c
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the GC roots",
		Long: `List the explicit GC roots, sorted, one per line; with --json, as a JSON array
of store paths.`,
		Example: `  trove root list
  trove root list --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.RootList, localapi.RootListRequest{}, nil)
			if err != nil {
				return err
			}
			return writeList(a.stdout, asJSON, r.Paths)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return group(&cobra.Command{
		Use:   "root",
		Short: "Add, remove and list GC roots",
		Long: `Manage the explicit GC roots: store paths that trove gc keeps, together
with everything they reference. (Profiles will be roots too once they exist.)`,
		Example: `  trove root add /nix/store/<hash>-hello-2.12
  trove root list
  trove root remove <hash>-hello-2.12`,
	}, edit(localapi.RootAdd, "added", &cobra.Command{
		Use:   "add STOREPATH...",
		Short: "Make store paths GC roots",
		Long: `Make each STOREPATH a GC root, so that trove gc keeps it and its closure.
The paths must be valid in the store. Adding a root twice is harmless.`,
		Example: `  trove root add /nix/store/<hash>-hello-2.12
  trove root add $(trove add ./config)`,
	}), edit(localapi.RootRemove, "removed", &cobra.Command{
		Use:     "remove STOREPATH...",
		Aliases: []string{"rm"},
		Short:   "Stop store paths being GC roots",
		Long: `Stop each STOREPATH being a GC root. The path stays in the store until the
next trove gc finds nothing else that needs it. Removing a path that is not a
root is an error.`,
		Example: `  trove root remove /nix/store/<hash>-hello-2.12
  trove root remove <hash>-hello-2.12 && trove gc`,
	}), list)
}
