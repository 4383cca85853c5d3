package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/store"
)

// call runs an operation of the local API: in the agent that owns the
// home, or here (localapi.Call decides). A request the operation calls
// wrong is a usage error.
func call[Req, Resp any](ctx context.Context, a *app, o localapi.Op[Req, Resp], req Req, ev func(localapi.Event)) (Resp, error) {
	home, err := a.homeDir()
	if err != nil {
		var zero Resp
		return zero, err
	}
	kind, err := a.kind(home)
	if err != nil {
		var zero Resp
		return zero, err
	}
	t := localapi.Target{Home: home, StoreDir: a.storeDir, Kind: kind, Log: a.log, LogTo: a.stderr, Waiting: func(h store.Holder) {
		what := "start"
		if h.Role == store.RoleAgentStopping {
			what = "stop"
		}
		fmt.Fprintf(a.stderr, "trove: waiting for the agent (pid %d) to %s…\n", h.PID, what)
	}}
	resp, err := localapi.Call(ctx, t, o, req, ev)
	if localapi.IsUsage(err) {
		return resp, usageError{err}
	}
	return resp, err
}

// show prints an operation's response when it succeeded: as JSON with
// asJSON, else with plain.
func show[Resp any](a *app, asJSON bool, r Resp, err error, plain func(Resp) error) error {
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a.stdout, r)
	}
	return plain(r)
}

// printEach prints a line for each thing an operation did (those done
// before its error too), and returns its error.
func (a *app) printEach(format string, done []string, err error) error {
	for _, d := range done {
		fmt.Fprintf(a.stdout, format+"\n", d)
	}
	return err
}

// events shows the events of an operation as trove always has: imported
// paths (when progress is shown), unreachable peers, resolved
// configurations, waits, and output for the terminal.
type events struct {
	a        *app
	imported bool // show imported paths
	sync     *syncProgress
	waitName string // the profile an activation waits for
}

func (e events) show(ev localapi.Event) {
	a := e.a
	switch {
	case ev.Progress != nil && e.sync != nil:
		e.sync.update(*ev.Progress)
	case ev.Imported != nil && e.imported:
		fmt.Fprintf(a.stderr, "imported %s (%s)\n", ev.Imported.Path, humanBytes(ev.Imported.NarSize))
	case ev.Unreachable != nil:
		fmt.Fprintf(a.stderr, "trove: cannot reach %s: %v\n", ev.Unreachable.Peer, ev.Unreachable.Error)
	case ev.Resolved != nil:
		r := ev.Resolved
		fmt.Fprintf(a.stderr, "%s: generation %d, %d paths, published by %s\n", r.Name, r.Generation, r.Paths, r.Publisher)
	case ev.WaitingFor != "":
		fmt.Fprintf(a.stderr, "waiting for another activation of %s to finish (%s)…\n", e.waitName, ev.WaitingFor)
	case ev.Output != nil && ev.Output.Stream == 1:
		a.stdout.Write(ev.Output.Data)
	case ev.Output != nil:
		a.stderr.Write(ev.Output.Data)
	}
}

// isTerminal reports whether v is a file open on a terminal.
func isTerminal(v any) bool {
	f, ok := v.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// writeJSON prints v as one line of compact JSON, as Nix does, without
// HTML escaping.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeList prints a listing: one item a line, or with asJSON a JSON array.
func writeList(w io.Writer, asJSON bool, items []string) error {
	if asJSON {
		return writeJSON(w, items)
	}
	for _, it := range items {
		fmt.Fprintln(w, it)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// humanBytes renders a byte count for people: "512 B", "1.5 MiB".
func humanBytes(n uint64) string { return humanize.IBytes(n) }

// group makes c a command that only groups subcommands, like trove nar:
// alone it shows its help; with an unknown subcommand it is a usage error
// (cobra would otherwise show the help and exit 0).
func group(c *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	}
	c.AddCommand(subs...)
	return c
}

// Argument-count checks with messages that show the command's usage line.

func exactArgs(n int) cobra.PositionalArgs { return argCount(n, n) }

func minArgs(n int) cobra.PositionalArgs { return argCount(n, -1) }

func argCount(least, most int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		got := len(args)
		if got >= least && (most < 0 || got <= most) {
			return nil
		}
		what := "none"
		if got > 0 {
			what = fmt.Sprintf("%d %s", got, plural(got, "argument", "arguments"))
		}
		return usagef("wrong number of arguments (got %s); usage: %s", what, cmd.UseLine())
	}
}
