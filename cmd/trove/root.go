package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
)

// app is one invocation of trove: its standard streams, its environment and
// the global flags. Commands read everything from here, never from os
// directly, so tests can run them in-process.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	euid   int

	// Global flags.
	home       string
	storeDir   string
	backend    string // --store
	nixStore   string // --nix-store
	verbose    bool
	cpuProfile string

	log *slog.Logger

	// cwd resolves relative path arguments: they are made absolute here,
	// so an operation that runs in the agent finds the same files.
	cwd string
	// profFile receives the CPU profile (hidden --cpuprofile flag).
	profFile *os.File
}

func (a *app) stopProfile() {
	if a.profFile != nil {
		pprof.StopCPUProfile()
		a.profFile.Close()
		a.profFile = nil
	}
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	cwd, _ := os.Getwd()
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, euid: os.Geteuid(), cwd: cwd}
}

// abs makes a path argument absolute against the caller's directory; ""
// stays "".
func (a *app) abs(p string) string {
	if p == "" {
		return ""
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(a.cwd, p)
}

// stderrIsTerminal says whether progress may be drawn on stderr.
func (a *app) stderrIsTerminal() bool { return isTerminal(a.stderr) }

// fileArg is abs of a file argument, except "-" (standard input or output).
func (a *app) fileArg(p string) string {
	if p == "-" {
		return p
	}
	return a.abs(p)
}

// absAll is abs of each path.
func (a *app) absAll(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = a.abs(p)
	}
	return out
}

// usageError is a wrong command line: exit status 2, with a pointer to --help.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// runError is a failure of a command that ran: exit status 1.
type runError struct{ error }

func (e runError) Unwrap() error { return e.error }

// errReported is returned by a command that has already told the user what
// went wrong (verify listing problems) and only needs exit status 1.
var errReported = errors.New("failure already reported")

// run executes the command line args and returns the exit status.
func run(ctx context.Context, a *app, args []string) (code int) {
	defer func() {
		// A bug must not greet the user with a Go stack trace; -v shows it.
		if r := recover(); r != nil {
			fmt.Fprintf(a.stderr, "trove: internal error: %v (please report this; run with -v for details)\n", r)
			if a.verbose {
				a.stderr.Write(debug.Stack())
			}
			code = 1
		}
	}()
	root := newRootCmd(a)
	root.SetArgs(args)
	defer a.stopProfile()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var re runError
	if errors.As(err, &re) {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(a.stderr, "trove: %v\n", re.error)
		}
		return 1
	}
	// Everything else was refused before a command ran: an unknown command
	// or flag, a wrong number of arguments, a malformed argument.
	fmt.Fprintf(a.stderr, "trove: %v\n", strings.TrimSpace(err.Error()))
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return 2
}

const (
	groupStore  = "store"
	groupGC     = "gc"
	groupNAR    = "nar"
	groupSetup  = "setup"
	groupAgent  = "agent"
	groupConfig = "config"
)

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "trove",
		Short: "Share a Nix-style content-addressed store between machines, peer to peer",
		Long: `trove shares a Nix-style content-addressed store between machines, peer to
peer. Every machine runs "trove agent"; agents in a trust group fetch the
missing parts of a closure from each other in verified, deduplicated chunks,
and follow signed configurations from your other machines, activating each
new generation with rollback. NARs, narHashes, store paths and signatures
are byte-identical to Nix's.

The store lives in the trove home (--home): metadata in a Badger database
under db/, and each path's tree under store/<hash>-<name>. The logical store
directory (--store-dir, /nix/store by default) is the one store path hashes
are computed against; the trees themselves stay inside the home. While an
agent runs, other commands in the same home run inside it.

Store paths can be given as full paths (/nix/store/<hash>-<name>), paths
below them (/nix/store/<hash>-<name>/bin/sh), bare <hash>-<name>, or a
symlink to one such as ./result.

Exit status: 0 on success, 1 when the command failed, 2 when the command
line is wrong.`,
		Example: `  trove demo                        # see it work: three agents on this computer
  trove agent &                     # run the agent
  trove peer allow 12D3KooW... --name desktop
  trove sync /nix/store/<hash>-hello-2.12
  trove follow laptop --activate --run
  trove publish laptop ./result --activate bin/switch-to-configuration`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setup()
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	f := root.PersistentFlags()
	f.StringVar(&a.home, "home", "", "trove home `DIR` (env TROVE_HOME; default $XDG_DATA_HOME/trove,\n~/.local/share/trove, or /var/lib/trove as root)")
	f.StringVar(&a.storeDir, "store-dir", nix.DefaultStoreDir, "logical store `DIR` that store paths are named under")
	f.StringVar(&a.backend, "store", "", "the store to work on: `embedded` (trove's own) or nix (the machine's\nNix store); default: config.toml's store, else what the home was made with")
	f.StringVar(&a.nixStore, "nix-store", "", "with --store nix, another Nix store than the machine's: local?root=`DIR`\n(as Nix's --store, e.g. for an installation under /mnt)")
	f.BoolVarP(&a.verbose, "verbose", "v", false, "log debug messages to standard error")
	f.StringVar(&a.cpuProfile, "cpuprofile", "", "write a CPU profile of this command to `FILE`")
	f.MarkHidden("cpuprofile")

	root.AddGroup(
		&cobra.Group{ID: groupSetup, Title: "Setting up:"},
		&cobra.Group{ID: groupAgent, Title: "The agent:"},
		&cobra.Group{ID: groupConfig, Title: "Configurations:"},
		&cobra.Group{ID: groupStore, Title: "Store paths:"},
		&cobra.Group{ID: groupGC, Title: "Garbage collection:"},
		&cobra.Group{ID: groupNAR, Title: "NAR archives:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupSetup, newDemoCmd(a), newBenchCmd(a), newInitCmd(a), newIDCmd(a), newInviteCmd(a), newJoinCmd(a), newGroupCmd(a), newPeerCmd(a))
	add(groupAgent, newAgentCmd(a), newStatusCmd(a), newPeersCmd(a), newFleetCmd(a))
	add(groupConfig, newPublishCmd(a), newFollowCmd(a), newUnfollowCmd(a), newActivateCmd(a), newRollbackCmd(a), newGenerationsCmd(a), newManifestCmd(a))
	add(groupStore, newAddCmd(a), newImportNixCmd(a), newImportCacheCmd(a), newSyncCmd(a), newPathInfoCmd(a), newClosureCmd(a), newVerifyCmd(a))
	add(groupStore, newBundleCmd(a))
	add(groupSetup, newTrustCmd(a), newKeyCmd(a))
	add(groupGC, newGCCmd(a), newRootsCmd(a))
	add(groupNAR, newNARCmd(a))

	markRunErrors(root)
	return root
}

// markRunErrors wraps every command's RunE so that its errors count as
// failures (exit 1) unless the command itself called them usage errors.
// Errors cobra raises before RunE (unknown commands, bad flags, argument
// counts) stay unmarked and exit 2.
func markRunErrors(c *cobra.Command) {
	if inner := c.RunE; inner != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := inner(cmd, args)
			var ue usageError
			if err == nil || errors.As(err, &ue) {
				return err
			}
			return runError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// setup checks the global flags and sets up logging; it runs before every
// command.
func (a *app) setup() error {
	level := slog.LevelWarn
	if a.verbose {
		level = slog.LevelDebug
	}
	a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	if a.cpuProfile != "" {
		f, err := os.Create(a.abs(a.cpuProfile))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		a.profFile = f
	}
	if !filepath.IsAbs(a.storeDir) || filepath.Clean(a.storeDir) != a.storeDir || a.storeDir == "/" {
		return usagef("--store-dir %q must be a clean absolute path other than /, such as %s", a.storeDir, nix.DefaultStoreDir)
	}
	return nil
}

// homeDir is the trove home: --home, else TROVE_HOME, else the default for
// this user, made absolute.
// kind is the store the command asked for: --store and --nix-store over
// config.toml's store and nix_store; zero means the home's own.
func (a *app) kind(home string) (store.Kind, error) {
	backend, nixStore := a.backend, a.nixStore
	if backend == "" && nixStore == "" {
		if fc, err := agent.LoadConfig(home); err == nil {
			backend, nixStore = fc.Store, fc.NixStore
		}
	}
	k, err := store.ParseKind(backend, nixStore)
	if err != nil {
		return k, usageError{err}
	}
	return k, nil
}

func (a *app) homeDir() (string, error) {
	home := a.home
	if home == "" {
		home = a.getenv("TROVE_HOME")
	}
	if home == "" {
		var err error
		if home, err = agent.DefaultHome(a.getenv, a.euid); err != nil {
			return "", err
		}
	}
	return filepath.Abs(home)
}

// storePaths turns STOREPATH arguments into store paths for a request:
// absolute store paths, paths below them, bare <hash>-<name>, or symlinks
// to one of those (like Nix's ./result). A malformed one is a usage error.
func (a *app) storePaths(args []string) ([]string, error) {
	out := make([]string, len(args))
	for i, arg := range args {
		p, err := nix.ParsePathLoose(a.storeDir, arg)
		if err != nil {
			target, lerr := os.Readlink(a.abs(arg))
			if lerr != nil {
				return nil, usageError{err}
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(a.abs(arg)), target)
			}
			if p, lerr = nix.ParsePathLoose(a.storeDir, target); lerr != nil {
				return nil, usageError{err}
			}
		}
		out[i] = p.Abs(a.storeDir)
	}
	return out, nil
}

// storePath is storePaths of one argument.
func (a *app) storePath(arg string) (string, error) {
	ps, err := a.storePaths([]string{arg})
	if err != nil {
		return "", err
	}
	return ps[0], nil
}

// pathOrConfig reads an argument naming a store path or a configuration
// NAME[@N]: it returns the store path, or "" for a configuration.
func (a *app) pathOrConfig(arg string) (string, error) {
	p, err := a.storePath(arg)
	if err != nil {
		if _, _, rerr := manifest.ParseRef(arg); rerr == nil {
			return "", nil
		}
	}
	return p, err
}
