package main

import (
	"context"
	"fmt"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/trove-p2p/trove/profile"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/manifest"
)

func newPublishCmd(a *app) *cobra.Command {
	var activate, check, keyName string
	c := &cobra.Command{
		Use:   "publish NAME STOREPATH",
		Short: "Publish a new generation of a configuration",
		Long: `Make generation N+1 of the configuration NAME from the closure of STOREPATH
(which must be in the store), sign it with your key, and announce it to the
machines that follow NAME. --activate names the command, relative to the
root, that activation runs (like bin/switch-to-configuration). --check names
a health check, relative to the root, that followers run after activating
it: if it fails or does not finish within their deadline, they roll back
to the generation they had (see trove follow).

The signing key is --key NAME from $TROVE_HOME/keys, or the only one there
(trove key generate makes one). Followers must trust its public key for
NAME: trove trust add KEY --config NAME.`,
		Example: `  trove publish laptop /nix/store/<hash>-nixos-system --activate bin/switch-to-configuration
  trove publish web ./result --activate bin/activate --check bin/healthy
  trove publish dotfiles ./result --key laptop-1`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			root, err := a.storePath(args[1])
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.Publish, localapi.PublishRequest{
				Name: name, Root: root, Activate: activate, Check: check, Key: keyName}, nil)
			if err != nil {
				return err
			}
			if !r.Announced {
				fmt.Fprintln(a.stderr, "no agent is running: published here; peers get it when they ask (trove agent announces it)")
			}
			fmt.Fprintf(a.stdout, "published %s generation %d (%d %s) signed by %s\n", name, r.Generation, r.Paths, plural(r.Paths, "path", "paths"), r.Key)
			return nil
		},
	}
	c.Flags().StringVar(&activate, "activate", "", "activation command `REL`, relative to the root")
	c.Flags().StringVar(&check, "check", "", "health check `REL`, relative to the root, that followers run after activating")
	c.Flags().StringVar(&keyName, "key", "", "sign with the key `NAME` in $TROVE_HOME/keys")
	return c
}

func newManifestCmd(a *app) *cobra.Command {
	parent := &cobra.Command{
		Use:   "manifest",
		Short: "Show the signed manifests of configurations known here",
		Long: `A manifest is one signed generation of a configuration: its root, its
activation command, the whole closure's path infos, its publisher's key and
the previous generation's ID. Those known here were published here or
fetched from peers and verified.`,
		Example: `  trove manifest list
  trove manifest show laptop@3 --json`,
	}
	var asJSON bool
	showCmd := &cobra.Command{
		Use:     "show NAME[@N]",
		Short:   "Show a configuration's newest (or Nth) manifest",
		Long:    "Show the newest generation of NAME known here, or generation N.",
		Example: `  trove manifest show laptop`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, gen, err := manifest.ParseRef(args[0])
			if err != nil {
				return usageError{err}
			}
			j, err := call(cmd.Context(), a, localapi.ShowManifest, localapi.ShowManifestRequest{Name: name, Generation: gen}, nil)
			return show(a, asJSON, j, err, func(j localapi.ManifestInfo) error {
				w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "name:\t%s\ngeneration:\t%d\nid:\t%s\nroot:\t%s\n", j.Name, j.Generation, j.ID, j.Root)
				if j.Activate != "" {
					fmt.Fprintf(w, "activate:\t%s\n", j.Activate)
				}
				fmt.Fprintf(w, "created:\t%s\npublisher:\t%s\nclosure:\t%d paths, %s\n", j.Created, j.Publisher, j.Paths, humanBytes(j.NarBytes))
				if j.Previous != "" {
					fmt.Fprintf(w, "previous:\t%s\n", j.Previous)
				}
				return w.Flush()
			})
		},
	}
	showCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var listJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the configurations and generations known here",
		Long:    "List every configuration with a manifest here and its generations.",
		Example: `  trove manifest list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.ListManifests, localapi.ListManifestsRequest{}, nil)
			return show(a, listJSON, r.Manifests, err, func(out []localapi.ManifestInfo) error {
				if len(out) == 0 {
					fmt.Fprintln(a.stderr, "no manifests here: publish one (trove publish) or follow one (trove follow)")
					return nil
				}
				w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tGEN\tCREATED\tPATHS\tSIZE\tROOT")
				for _, j := range out {
					fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\n", j.Name, j.Generation, j.Created, j.Paths, humanBytes(j.NarBytes), j.Root)
				}
				return w.Flush()
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	return group(parent, showCmd, list)
}

// profileHelp says what --profile means, in the help of every command
// that has it.
const profileHelp = `--profile PATH says where NAME's profile link is, instead of
$TROVE_HOME/profiles/NAME (with --store nix, Nix's profiles directory:
/nix/var/nix/profiles/NAME as root): for example /nix/var/nix/profiles/system,
or ~/.local/state/nix/profiles/home-manager. Its generations are
PATH-N-link beside it, as nix-env -p PATH lays them out, so nix-env
--list-generations -p PATH and nix-env --rollback -p PATH agree with trove
generations NAME; with --store nix each is a root of Nix's garbage
collector, as nix-env makes them. Given to follow, activate or rollback,
the path is recorded for NAME, and later commands and the agent use it
without --profile. A profile moves only while it has no generations: once
NAME has generations at one path, another is refused, saying how to move.`

func newFollowCmd(a *app) *cobra.Command {
	var activate, runIt bool
	var timeout, checkTimeout time.Duration
	var profilePath, check, runAs, when string
	c := &cobra.Command{
		Use:   "follow NAME",
		Short: "Follow a configuration: fetch (and activate) each new generation",
		Long: `Record that this machine follows the configuration NAME. The agent fetches
each newer signed generation as soon as it is announced (or when it
reconnects after being offline), and with --activate switches the profile
to it; --run also runs its activation command, for at most --timeout
(default: timeout in config.toml, else 10m), after which the command's
whole process group is killed and the failure shows in trove status.

A manual switch holds: after trove rollback NAME (or activate --generation
N of an older one), the agent activates only generations newer than any
the profile has had, and trove status shows the profile as held back.
Running trove follow NAME --activate again resumes: the newest generation
is activated.

Health checks make unattended following safe. With --run, and a check
(the generation's own, published with trove publish --check, or this
machine's, --check CMD run with /bin/sh -c), each activation is a trial:
the activation command, every check, and reaching a member of the trust
group afterwards must all succeed within --check-timeout of the switch
(default 2m; a check still running then is killed with its process
group). If not, the profile goes back to the generation it had, that
generation's activation command runs again, and the failed generation is
never activated automatically on this machine again (trove activate still
can); trove status shows it. A machine that dies during a trial finishes
the rollback when its agent starts.

Activation commands and checks run as --user USER with a clean
environment (HOME, USER, PATH and the TROVE_ variables), by default as the
owner of a profile outside /nix/var/nix/profiles (a home-manager profile
is never activated as root). --when delays the switch, not the fetch:
boot switches the profile now and activates at the next boot (NixOS's
bin/switch-to-configuration is run with "boot"; any other command runs when
the agent first starts after the reboot; checks are not run then); a
window such as 02:00-05:00 (local time, may wrap past midnight) switches
only inside it. trove status and trove fleet show a waiting switch as
pending.

The publisher's key must be trusted for NAME (trove trust add KEY --config
NAME); follow warns when no trusted key may publish NAME.

` + profileHelp,
		Example: `  trove follow laptop --activate
  trove follow dotfiles --activate --run --timeout 2m
  trove follow web --activate --run --check 'curl -fs localhost:8080/health' --check-timeout 1m
  trove follow home --activate --run --user alice --when 02:00-05:00
  sudo trove follow desk --activate --run --profile /nix/var/nix/profiles/system`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runIt && !activate {
				return usagef("--run needs --activate")
			}
			if (check != "" || checkTimeout != 0) && !runIt {
				return usagef("--check and --check-timeout need --activate --run")
			}
			f := agent.Follow{Name: args[0], Activate: activate, Run: runIt, Check: check, User: runAs, When: when}
			if (runAs != "" || when != "") && !activate {
				return usagef("--user and --when need --activate")
			}
			if _, err := agent.ParseWhen(when); err != nil {
				return usagef("%v", err)
			}
			if err := checkUser(runAs); err != nil {
				return err
			}
			if checkTimeout < 0 {
				return usagef("--check-timeout must be above zero")
			}
			if checkTimeout > 0 {
				f.CheckTimeout = checkTimeout.String()
			}
			t, err := timeoutFlag(cmd, timeout)
			if err != nil {
				return err
			}
			if t > 0 {
				f.Timeout = t.String()
			}
			return a.setFollow(cmd.Context(), f, true, a.abs(profilePath))
		},
	}
	c.Flags().BoolVar(&activate, "activate", false, "switch the profile to each new generation")
	c.Flags().StringVar(&profilePath, "profile", "", "keep NAME's profile at `PATH` (recorded; see above)")
	c.Flags().BoolVar(&runIt, "run", false, "also run each generation's activation command")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop an activation command after `DURATION` (default: config.toml's timeout, else 10m)")
	c.Flags().StringVar(&runAs, "user", "", "run activation commands and checks as `USER`, with a clean environment\n(default: the profile's owner, for a profile outside /nix/var/nix/profiles)")
	c.Flags().StringVar(&when, "when", "", "switch `now` (default), at the next `boot`, or inside a daily window such as 02:00-05:00")
	c.Flags().StringVar(&check, "check", "", "after each activation, also run this machine's health check `CMD` (with /bin/sh -c)")
	c.Flags().DurationVar(&checkTimeout, "check-timeout", 0, "roll back unless the activation and checks pass within `DURATION` (default 2m)")
	return c
}

func newUnfollowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "unfollow NAME",
		Short:   "Stop following a configuration",
		Long:    "Stop fetching new generations of NAME. Its profile and generations stay.",
		Example: `  trove unfollow laptop`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.setFollow(cmd.Context(), agent.Follow{Name: args[0]}, false, "")
		},
	}
}

func (a *app) setFollow(ctx context.Context, f agent.Follow, follow bool, profilePath string) error {
	verb := "following"
	if !follow {
		verb = "no longer following"
	}
	r, err := call(ctx, a, localapi.SetFollow, localapi.FollowRequest{Follow: f, Stop: !follow, Profile: profilePath}, nil)
	if r.NoPublisher {
		fmt.Fprintf(a.stderr, "warning: no trusted key may publish %s, so every generation of it will be refused; trust the publisher's key with `trove trust add KEY --config %s`\n", f.Name, f.Name)
	}
	if err != nil {
		return err
	}
	if r.Agent {
		fmt.Fprintf(a.stdout, "%s %s\n", verb, f.Name)
	} else {
		fmt.Fprintf(a.stdout, "%s %s (the agent acts on it when it runs: trove agent)\n", verb, f.Name)
	}
	return nil
}

// timeoutFlag is --timeout of activate and rollback: 0 when not given
// (the operation then uses config.toml's), else above zero.
func timeoutFlag(cmd *cobra.Command, timeout time.Duration) (time.Duration, error) {
	if !cmd.Flags().Changed("timeout") {
		return 0, nil
	}
	if timeout <= 0 {
		return 0, usagef("--timeout %s: want a duration above zero, such as 90s or 10m", timeout)
	}
	return timeout, nil
}

// printSwitch says what an activation or rollback switched, and whether
// the profile is now held back.
func (a *app) printSwitch(r localapi.SwitchResponse) {
	if !r.Switched {
		return
	}
	fmt.Fprintf(a.stdout, "switched %s from generation %d to %d\n", r.Name, r.From, r.To)
	if h := r.Held; h != nil {
		fmt.Fprintf(a.stderr, "%s is held at generation %d: following activates only generations above %d; run `%s` to resume\n", r.Name, h.Current, h.Highest, h.Resume)
	}
	if r.NixProfile != "" {
		fmt.Fprintf(a.stdout, "set Nix profile %s to %s\n", r.NixProfile, r.Root)
	}
}

func newActivateCmd(a *app) *cobra.Command {
	var gen uint64
	var runIt, dryRun bool
	var timeout time.Duration
	var nixProfile, profilePath, runAs string
	c := &cobra.Command{
		Use:   "activate NAME",
		Short: "Switch a profile to a generation of a configuration",
		Long: `Make NAME's profile ($TROVE_HOME/profiles/NAME, or the one given with
--profile) point at the newest generation of NAME (or --generation N),
whose closure must be here (trove sync NAME fetches it). The switch is
one atomic rename: the profile always points at a whole generation. --run runs the generation's activation command with its output
shown, for at most --timeout (default: timeout in config.toml, else 10m),
after which its whole process group is killed; if it fails, the new
generation stays selected (as NixOS does) and trove says how to roll back.
Activating an older generation holds a followed profile there, as
trove rollback does. --dry-run says what would be fetched and what
would change, and changes nothing.

` + profileHelp + `

--nix-profile PATH is for the embedded store: it also imports the
closure into the local Nix store and sets that second, real Nix profile to
it (nix-env -p PATH --set, numbered by Nix, each time activate is run with
it; the agent does not keep it up to date). With --store nix, where NAME's
profile is a Nix profile already, it is the same as --profile PATH:
nothing is imported, and the generations keep trove's numbers.`,
		Example: `  trove activate laptop --run
  trove activate laptop --generation 3
  trove activate laptop --dry-run
  sudo trove activate desk --run --profile /nix/var/nix/profiles/system
  trove activate laptop --nix-profile /nix/var/nix/profiles/system`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			t, err := timeoutFlag(cmd, timeout)
			if err != nil && !dryRun {
				return err
			}
			if err := checkUser(runAs); err != nil {
				return err
			}
			req := localapi.ActivateRequest{Name: name, Generation: gen, Run: runIt, DryRun: dryRun, Timeout: t, User: runAs}
			req.NixProfile, req.Profile = a.abs(nixProfile), a.abs(profilePath)
			r, err := call(cmd.Context(), a, localapi.Activate, req, events{a: a, waitName: name}.show)
			if dryRun && err == nil {
				fmt.Fprintf(a.stdout, "would switch %s from generation %d to %d (root %s)\n", name, r.From, r.To, r.Root)
				fmt.Fprintf(a.stdout, "would fetch %d of %d paths (%s)\n", r.Missing, r.Total, humanBytes(r.MissingBytes))
				if r.Run != "" {
					fmt.Fprintf(a.stdout, "would run %s\n", r.Run)
				}
				return nil
			}
			a.printSwitch(r)
			return err
		},
	}
	c.Flags().Uint64Var(&gen, "generation", 0, "activate generation `N` (default: the newest)")
	c.Flags().BoolVar(&runIt, "run", false, "run the activation command")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "say what would happen, change nothing")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop the activation command after `DURATION` (default: config.toml's timeout, else 10m)")
	c.Flags().StringVar(&profilePath, "profile", "", "keep NAME's profile at `PATH` (recorded; see above)")
	c.Flags().StringVar(&runAs, "user", "", "run the activation command as `USER`, with a clean environment (default: the profile's owner, see trove follow)")
	c.Flags().StringVar(&nixProfile, "nix-profile", "", "embedded store: also set the real Nix profile `PATH` (imports the closure into Nix); --store nix: as --profile")
	return c
}

func newRollbackCmd(a *app) *cobra.Command {
	var to uint64
	var runIt bool
	var timeout time.Duration
	var profilePath, runAs string
	c := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Switch a profile back to the previous (or a given) generation",
		Long: `Switch NAME to the generation before the current one, or to --to N, with
one atomic rename; --run runs that generation's activation command again.

The rollback holds: an agent that follows NAME with --activate then
activates only a generation newer than any the profile has had, never the
one rolled back from, and trove status shows NAME as held back. To resume,
run trove follow NAME --activate again (or trove activate NAME for the
newest). If another activation of NAME is running, rollback waits for it,
at most its timeout.

` + profileHelp,
		Example: `  trove rollback laptop
  trove rollback laptop --to 2 --run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			t, err := timeoutFlag(cmd, timeout)
			if err != nil {
				return err
			}
			if err := checkUser(runAs); err != nil {
				return err
			}
			r, err := call(cmd.Context(), a, localapi.Rollback, localapi.RollbackRequest{Name: name, To: to, Run: runIt, Timeout: t, Profile: a.abs(profilePath), User: runAs}, events{a: a, waitName: name}.show)
			a.printSwitch(r)
			return err
		},
	}
	c.Flags().Uint64Var(&to, "to", 0, "switch to generation `N`")
	c.Flags().StringVar(&runAs, "user", "", "run the activation command as `USER`, with a clean environment (default: the profile's owner)")
	c.Flags().StringVar(&profilePath, "profile", "", "NAME's profile is at `PATH` (recorded; see above)")
	c.Flags().BoolVar(&runIt, "run", false, "run the activation command of that generation")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop the activation command after `DURATION` (default: config.toml's timeout, else 10m)")
	return c
}

func newGenerationsCmd(a *app) *cobra.Command {
	var asJSON bool
	var profilePath, delProfilePath string
	c := &cobra.Command{
		Use:   "generations NAME",
		Short: "List a profile's generations",
		Long: `List the generations of profile NAME: number, date, root, closure size, and
which is current. Every generation is a GC root until deleted.

` + profileHelp + `
Here --profile records nothing; it must be NAME's profile unless NAME has
no generations yet.`,
		Example: `  trove generations laptop
  trove generations laptop --json
  trove generations delete laptop 1 2
  trove generations delete laptop 30d
  trove generations delete laptop +3`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), a, localapi.Generations, localapi.GenerationsRequest{Name: args[0], Profile: a.abs(profilePath)}, nil)
			return show(a, asJSON, r.Generations, err, func(gens []profile.Generation) error {
				if len(gens) == 0 {
					fmt.Fprintf(a.stderr, "%s has no generations here\n", args[0])
					return nil
				}
				w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "GEN\tDATE\tCLOSURE\tROOT\t")
				for _, g := range gens {
					cur := ""
					if g.Current {
						cur = "(current)"
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", g.Number, g.Created.Format("2006-01-02 15:04:05"), humanBytes(g.ClosureSize), g.Root, cur)
				}
				return w.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&profilePath, "profile", "", "NAME's profile is at `PATH` (see above)")
	del := &cobra.Command{
		Use:   "delete NAME (N... | Nd | +N)",
		Short: "Delete old generations of a profile",
		Long: `Delete generations of NAME: the numbers given, those older than N days (Nd),
or all but the newest N (+N). The current generation is never deleted. Run
trove gc afterwards to free their paths (with --store nix, Nix's
nix-collect-garbage). --profile PATH is as trove generations --profile.`,
		Example: `  trove generations delete laptop 1 2
  trove generations delete laptop 30d
  trove generations delete laptop +3`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			req := localapi.DeleteGenerationsRequest{Name: name, Profile: a.abs(delProfilePath)}
			for _, arg := range args[1:] {
				sel, err := profile.ParseSelector(arg)
				if err != nil {
					return usageError{err}
				}
				req.Selectors = append(req.Selectors, sel)
			}
			r, err := call(cmd.Context(), a, localapi.DeleteGenerations, req, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "deleted %d %s of %s; run trove gc to free their paths\n", r.Deleted, plural(r.Deleted, "generation", "generations"), name)
			return nil
		},
	}
	del.Flags().StringVar(&delProfilePath, "profile", "", "NAME's profile is at `PATH`")
	c.AddCommand(del)
	return c
}

// checkUser refuses a --user that names nobody on this machine.
func checkUser(name string) error {
	if name == "" {
		return nil
	}
	if _, err := user.Lookup(name); err != nil {
		if _, err := user.LookupId(name); err != nil {
			return usagef("--user %s: no such user on this machine", name)
		}
	}
	return nil
}
