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

	"github.com/trove-p2p/trove/nix"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/store"
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
	verbose    bool
	cpuProfile string

	log *slog.Logger

	// cwd resolves relative path arguments: the process's own directory, or
	// the caller's when the command runs inside an agent.
	cwd string
	// agent is set when the command runs inside a running agent (through
	// its control API): it then uses the agent's store and node.
	agent *agent.Agent
	// stderrTTY overrides the terminal check of stderr inside an agent.
	stderrTTY *bool
	// args is the command line, kept to forward it to a running agent.
	args []string
	// forwarded is set once a command meant for an agent found it gone
	// and runs here instead: it is not forwarded again.
	forwarded bool
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

// abs makes a path argument absolute against the caller's directory.
func (a *app) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(a.cwd, p)
}

// stderrIsTerminal says whether progress may be drawn on stderr.
func (a *app) stderrIsTerminal() bool {
	if a.stderrTTY != nil {
		return *a.stderrTTY
	}
	return isTerminal(a.stderr)
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
	a.args = args
	root := newRootCmd(a)
	root.SetArgs(args)
	defer a.stopProfile()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, errForward) {
		return a.forward(ctx)
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
	add(groupSetup, newDemoCmd(a), newBenchCmd(a), newInitCmd(a), newIDCmd(a), newPeerCmd(a))
	add(groupAgent, newAgentCmd(a), newStatusCmd(a), newPeersCmd(a))
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
	if a.cpuProfile != "" && a.agent == nil {
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
func (a *app) homeDir() (string, error) {
	home := a.home
	if home == "" {
		home = a.getenv("TROVE_HOME")
	}
	if home == "" {
		var err error
		if home, err = defaultHome(a.getenv, a.euid); err != nil {
			return "", err
		}
	}
	return filepath.Abs(home)
}

// defaultHome follows DESIGN.md: /var/lib/trove for root, otherwise
// $XDG_DATA_HOME/trove, falling back to ~/.local/share/trove.
func defaultHome(getenv func(string) string, euid int) (string, error) {
	if euid == 0 {
		return "/var/lib/trove", nil
	}
	if x := getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "trove"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "trove"), nil
	}
	return "", errors.New("cannot choose a trove home: neither XDG_DATA_HOME nor HOME is set; pass --home DIR or set TROVE_HOME")
}

// openStore opens the store in the trove home, creating it if needed.
func (a *app) openStore() (*store.Store, error) {
	home, err := a.homeDir()
	if err != nil {
		return nil, err
	}
	a.log.Debug("opening store", "home", home, "storeDir", a.storeDir)
	return store.Open(home, store.Options{StoreDir: a.storeDir, Logger: a.log})
}

// errForward says the command must run inside the agent that owns the home.
var errForward = errors.New("forward to the agent")

// withStore runs fn with the store open and closes it afterwards, so the
// lock on the home is held only while a command runs. Inside an agent it
// uses the agent's store; when an agent owns the store, even one still
// starting, the whole command is forwarded to it.
func (a *app) withStore(fn func(*store.Store) error) (err error) {
	if a.agent != nil {
		if a.agent.Store.StoreDir() != a.storeDir {
			return fmt.Errorf("the running agent's store uses store dir %s, not %s", a.agent.Store.StoreDir(), a.storeDir)
		}
		return fn(a.agent.Store)
	}
	s, err := a.openStore()
	var locked *store.LockedError
	if errors.As(err, &locked) && !a.forwarded && (locked.Holder.Role.IsAgent() || a.agentRunning()) {
		// An agent owns the store, or is starting (or stopping):
		// forward waits for it to answer (or to let go). An agent of an
		// older trove records no role, but its socket answers.
		return errForward
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the store: %w", cerr)
		}
	}()
	return fn(s)
}

// parseStorePaths turns STOREPATH arguments into store paths: absolute
// store paths, paths below them, bare <hash>-<name>, or symlinks to one of
// those (like Nix's ./result). A malformed one is a usage error.
func (a *app) parseStorePaths(args []string) ([]nix.Path, error) {
	out := make([]nix.Path, 0, len(args))
	for _, arg := range args {
		p, err := nix.ParsePathLoose(a.storeDir, arg)
		if err != nil {
			if target, lerr := os.Readlink(a.abs(arg)); lerr == nil {
				if !filepath.IsAbs(target) {
					target = filepath.Join(filepath.Dir(a.abs(arg)), target)
				}
				if q, terr := nix.ParsePathLoose(a.storeDir, target); terr == nil {
					out = append(out, q)
					continue
				}
			}
			return nil, usageError{err}
		}
		out = append(out, p)
	}
	return out, nil
}

// groupRunE runs a command that only groups subcommands, like trove nar:
// alone it shows its help; with an unknown subcommand it is a usage error
// (cobra would otherwise show the help and exit 0).
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}

// Argument-count checks with messages that show the command's usage line.

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return argCountError(cmd, len(args))
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return argCountError(cmd, len(args))
		}
		return nil
	}
}

func argCountError(cmd *cobra.Command, got int) error {
	what := "none"
	if got > 0 {
		what = fmt.Sprintf("%d %s", got, plural(got, "argument", "arguments"))
	}
	return usagef("wrong number of arguments (got %s); usage: %s", what, cmd.UseLine())
}
