package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
)

// signingKey loads the secret key to publish with: --key NAME, or the only
// key in $TROVE_HOME/keys.
func signingKey(home, name string) (manifest.SecretKey, error) {
	dir := filepath.Join(home, "keys")
	if name == "" {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.secret"))
		switch len(matches) {
		case 0:
			return manifest.SecretKey{}, errors.New("no signing key: make one with `trove key generate NAME`")
		case 1:
			name = strings.TrimSuffix(filepath.Base(matches[0]), ".secret")
		default:
			return manifest.SecretKey{}, fmt.Errorf("%d signing keys in %s: choose one with --key NAME", len(matches), dir)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, name+".secret"))
	if err != nil {
		return manifest.SecretKey{}, fmt.Errorf("signing key %q: %w", name, err)
	}
	return manifest.ParseSecretKey(string(b))
}

func newPublishCmd(a *app) *cobra.Command {
	var activate, keyName string
	c := &cobra.Command{
		Use:   "publish NAME STOREPATH",
		Short: "Publish a new generation of a configuration",
		Long: `Make generation N+1 of the configuration NAME from the closure of STOREPATH
(which must be in the store), sign it with your key, and announce it to the
machines that follow NAME. --activate names the command, relative to the
root, that activation runs (like bin/switch-to-configuration).

The signing key is --key NAME from $TROVE_HOME/keys, or the only one there
(trove key generate makes one). Followers must trust its public key for
NAME: trove trust add KEY --config NAME.`,
		Example: `  trove publish laptop /nix/store/<hash>-nixos-system --activate bin/switch-to-configuration
  trove publish dotfiles ./result --key laptop-1`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := manifest.CheckName(name); err != nil {
				return usageError{err}
			}
			roots, err := a.parseStorePaths(args[1:])
			if err != nil {
				return err
			}
			home, err := a.homeDir()
			if err != nil {
				return err
			}
			key, err := signingKey(home, keyName)
			if err != nil {
				return err
			}
			// Your own key is trusted for what you publish with it.
			kr, err := a.keyring()
			if err != nil {
				return err
			}
			if !trustedFor(kr, key.Public(), name) {
				if err := kr.Add(key.Public(), append(kr.Configs(key.Name), name)...); err != nil {
					return err
				}
			}
			var m *manifest.Manifest
			if a.agent != nil {
				m, err = a.agent.Publish(cmd.Context(), key, name, roots[0], activate)
			} else if a.agentRunning() {
				return errForward
			} else {
				err = a.withStore(func(s *store.Store) error {
					m, _, err = profile.Publish(s, manifest.OpenHistory(home, kr), key, name, roots[0], activate)
					return err
				})
				if err == nil {
					fmt.Fprintln(a.stderr, "no agent is running: published here; peers get it when they ask (trove agent announces it)")
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "published %s generation %d (%d %s) signed by %s\n", name, m.Generation, len(m.Paths), plural(len(m.Paths), "path", "paths"), key.Name)
			return nil
		},
	}
	c.Flags().StringVar(&activate, "activate", "", "activation command `REL`, relative to the root")
	c.Flags().StringVar(&keyName, "key", "", "sign with the key `NAME` in $TROVE_HOME/keys")
	return c
}

func trustedFor(kr *manifest.Keyring, k manifest.PublicKey, name string) bool {
	for _, t := range kr.Keys() {
		if t.String() == k.String() {
			for _, c := range kr.Configs(k.Name) {
				if c == "*" || c == name {
					return true
				}
			}
		}
	}
	return false
}

func (a *app) history() (*manifest.History, error) {
	if a.agent != nil {
		return a.agent.History, nil
	}
	home, err := a.homeDir()
	if err != nil {
		return nil, err
	}
	kr, err := a.keyring()
	if err != nil {
		return nil, err
	}
	return manifest.OpenHistory(home, kr), nil
}

// manifestJSON is how manifests are shown.
type manifestJSON struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	ID         string `json:"id"`
	Root       string `json:"root"`
	Activate   string `json:"activate,omitempty"`
	Created    string `json:"created"`
	Publisher  string `json:"publisher"`
	Previous   string `json:"previous,omitempty"`
	Paths      int    `json:"paths"`
	NarBytes   uint64 `json:"narBytes"`
}

func toManifestJSON(m *manifest.Manifest, storeDir string) manifestJSON {
	id, _ := m.ID()
	j := manifestJSON{Name: m.Name, Generation: m.Generation, ID: id.String(), Root: m.Root.Abs(storeDir),
		Activate: m.Activate, Created: m.Created.UTC().Format(time.RFC3339), Publisher: m.Publisher.String(), Paths: len(m.Paths)}
	if !m.Previous.IsZero() {
		j.Previous = m.Previous.String()
	}
	for _, pi := range m.Paths {
		j.NarBytes += pi.NarSize
	}
	return j
}

func newManifestCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "manifest",
		Short: "Show the signed manifests of configurations known here",
		Long: `A manifest is one signed generation of a configuration: its root, its
activation command, the whole closure's path infos, its publisher's key and
the previous generation's ID. Those known here were published here or
fetched from peers and verified.`,
		Example: `  trove manifest list
  trove manifest show laptop@3 --json`,
		RunE: groupRunE,
	}
	var asJSON bool
	show := &cobra.Command{
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
			h, err := a.history()
			if err != nil {
				return err
			}
			m, _, err := h.Get(name, gen)
			if err != nil {
				return err
			}
			j := toManifestJSON(m, a.storeDir)
			if asJSON {
				return writeJSON(a.stdout, j)
			}
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
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var listJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the configurations and generations known here",
		Long:    "List every configuration with a manifest here and its generations.",
		Example: `  trove manifest list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := a.history()
			if err != nil {
				return err
			}
			names, err := h.Names()
			if err != nil {
				return err
			}
			out := []manifestJSON{}
			for _, n := range names {
				gens, err := h.Generations(n)
				if err != nil {
					return err
				}
				for _, g := range gens {
					if m, _, err := h.Get(n, g); err == nil {
						out = append(out, toManifestJSON(m, a.storeDir))
					}
				}
			}
			if listJSON {
				return writeJSON(a.stdout, out)
			}
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
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	c.AddCommand(show, list)
	return c
}

func newFollowCmd(a *app) *cobra.Command {
	var activate, runIt bool
	var timeout time.Duration
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

The publisher's key must be trusted for NAME (trove trust add KEY --config
NAME); follow warns when no trusted key may publish NAME.`,
		Example: `  trove follow laptop --activate
  trove follow dotfiles --activate --run --timeout 2m`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := manifest.CheckName(args[0]); err != nil {
				return usageError{err}
			}
			if runIt && !activate {
				return usagef("--run needs --activate")
			}
			f := agent.Follow{Name: args[0], Activate: activate, Run: runIt}
			if cmd.Flags().Changed("timeout") {
				if timeout <= 0 {
					return usagef("--timeout %s: want a duration above zero, such as 90s or 10m", timeout)
				}
				f.Timeout = timeout.String()
			}
			return a.setFollow(cmd.Context(), f, true)
		},
	}
	c.Flags().BoolVar(&activate, "activate", false, "switch the profile to each new generation")
	c.Flags().BoolVar(&runIt, "run", false, "also run each generation's activation command")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop an activation command after `DURATION` (default: config.toml's timeout, else 10m)")
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
			return a.setFollow(cmd.Context(), agent.Follow{Name: args[0]}, false)
		},
	}
}

func (a *app) setFollow(ctx context.Context, f agent.Follow, follow bool) error {
	verb := "following"
	if !follow {
		verb = "no longer following"
	}
	if a.agent == nil && a.agentRunning() {
		return errForward
	}
	if follow {
		kr, err := a.keyring()
		if err != nil {
			return err
		}
		if len(kr.Publishers(f.Name)) == 0 {
			fmt.Fprintf(a.stderr, "warning: no trusted key may publish %s, so every generation of it will be refused; trust the publisher's key with `trove trust add KEY --config %s`\n", f.Name, f.Name)
		}
	}
	if a.agent != nil {
		if err := a.agent.SetFollow(ctx, f, follow); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s %s\n", verb, f.Name)
		return nil
	}
	home, err := a.homeDir()
	if err != nil {
		return err
	}
	err = a.withStore(func(s *store.Store) error {
		return agent.RecordFollow(home, profile.OpenProfiles(s), f, follow)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%s %s (the agent acts on it when it runs: trove agent)\n", verb, f.Name)
	return nil
}

// activateOptions are the options of a manual activation: the activation
// command's timeout (--timeout, else config.toml's, else the default),
// and a wait for another activation of the profile that lasts as long as
// that one may run, saying what it waits for.
func (a *app) activateOptions(cmd *cobra.Command, runIt bool, timeout time.Duration) (profile.ActivateOptions, error) {
	home, err := a.homeDir()
	if err != nil {
		return profile.ActivateOptions{}, err
	}
	fc, err := agent.LoadConfig(home)
	if err != nil {
		return profile.ActivateOptions{}, err
	}
	configured := fc.Agent.ActivationTimeout()
	if !cmd.Flags().Changed("timeout") {
		timeout = configured
	} else if timeout <= 0 {
		return profile.ActivateOptions{}, usagef("--timeout %s: want a duration above zero, such as 90s or 10m", timeout)
	}
	return profile.ActivateOptions{
		Run: runIt, Timeout: timeout, Wait: max(timeout, configured) + 15*time.Second,
		OnWait: func(holder string) {
			fmt.Fprintf(a.stderr, "waiting for another activation of %s to finish (%s)…\n", cmd.Flags().Arg(0), holder)
		},
		Stdout: a.stdout, Stderr: a.stderr,
	}, nil
}

func newActivateCmd(a *app) *cobra.Command {
	var gen uint64
	var runIt, dryRun bool
	var timeout time.Duration
	var nixProfile string
	c := &cobra.Command{
		Use:   "activate NAME",
		Short: "Switch a profile to a generation of a configuration",
		Long: `Make $TROVE_HOME/profiles/NAME point at the newest generation of NAME (or
--generation N), fetching its closure from peers first if it is not here.
The switch is one atomic rename: the profile always points at a whole
generation. --run runs the generation's activation command with its output
shown, for at most --timeout (default: timeout in config.toml, else 10m),
after which its whole process group is killed; if it fails, the new
generation stays selected (as NixOS does) and trove says how to roll back.
Activating an older generation holds a followed profile there, as
trove rollback does. --dry-run says what would be fetched and what
would change, and changes nothing. --nix-profile PATH also imports the
closure into the local Nix store and sets that real Nix profile to it
(nix-env -p PATH --set), so a NixOS machine can switch with its own tools.`,
		Example: `  trove activate laptop --run
  trove activate laptop --generation 3
  trove activate laptop --dry-run
  trove activate laptop --nix-profile /nix/var/nix/profiles/system`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := manifest.CheckName(name); err != nil {
				return usageError{err}
			}
			h, err := a.history()
			if err != nil {
				return err
			}
			m, _, err := h.Get(name, gen)
			if errors.Is(err, manifest.ErrUnknown) {
				ref := name
				if gen > 0 {
					ref = fmt.Sprintf("%s@%d", name, gen)
				}
				return fmt.Errorf("%w; fetch it first with `trove sync %s`", err, ref)
			}
			if err != nil {
				return err
			}
			return a.withStore(func(s *store.Store) error {
				prof := profile.OpenProfiles(s)
				cur, _ := prof.Current(name)
				missing, bytes := 0, uint64(0)
				for _, pi := range m.Paths {
					if ok, _ := s.IsValid(pi.Path); !ok {
						missing++
						bytes += pi.NarSize
					}
				}
				if dryRun {
					fmt.Fprintf(a.stdout, "would switch %s from generation %d to %d (root %s)\n", name, cur, m.Generation, m.Root.Abs(s.StoreDir()))
					fmt.Fprintf(a.stdout, "would fetch %d of %d paths (%s)\n", missing, len(m.Paths), humanBytes(bytes))
					if runIt && m.Activate != "" {
						fmt.Fprintf(a.stdout, "would run %s\n", m.Activate)
					}
					return nil
				}
				if missing > 0 {
					return fmt.Errorf("%d paths of %s generation %d are not here; fetch them with `trove sync %s@%d`", missing, name, m.Generation, name, m.Generation)
				}
				opts, err := a.activateOptions(cmd, runIt, timeout)
				if err != nil {
					return err
				}
				err = profile.Activate(cmd.Context(), prof, m, opts)
				var ae *profile.ActivationError
				if err != nil && !errors.As(err, &ae) {
					return err
				}
				fmt.Fprintf(a.stdout, "switched %s from generation %d to %d\n", name, cur, m.Generation)
				a.noteHold(prof, name)
				if nixProfile != "" {
					if nerr := setNixProfile(cmd.Context(), s, h, a.abs(nixProfile), m.Root); nerr != nil {
						return nerr
					}
					fmt.Fprintf(a.stdout, "set Nix profile %s to %s\n", a.abs(nixProfile), m.Root.Abs(s.StoreDir()))
				}
				return err
			})
		},
	}
	c.Flags().Uint64Var(&gen, "generation", 0, "activate generation `N` (default: the newest)")
	c.Flags().BoolVar(&runIt, "run", false, "run the activation command")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "say what would happen, change nothing")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop the activation command after `DURATION` (default: config.toml's timeout, else 10m)")
	c.Flags().StringVar(&nixProfile, "nix-profile", "", "also set the real Nix profile `PATH` (imports the closure into Nix)")
	return c
}

func newRollbackCmd(a *app) *cobra.Command {
	var to uint64
	var runIt bool
	var timeout time.Duration
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
at most its timeout.`,
		Example: `  trove rollback laptop
  trove rollback laptop --to 2 --run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := manifest.CheckName(name); err != nil {
				return usageError{err}
			}
			return a.withStore(func(s *store.Store) error {
				prof := profile.OpenProfiles(s)
				gens, err := prof.Generations(name)
				if err != nil {
					return err
				}
				cur, err := prof.Current(name)
				if err != nil {
					return err
				}
				target := to
				if target == 0 {
					for _, g := range gens {
						if g.Number < cur {
							target = g.Number
						}
					}
					if target == 0 {
						return fmt.Errorf("%s has no generation before %d to roll back to (see trove generations %s)", name, cur, name)
					}
				}
				root, err := prof.Root(name, target)
				if err != nil {
					return err
				}
				var rel string
				if runIt {
					h, err := a.history()
					if err != nil {
						return err
					}
					m, _, err := h.Get(name, target)
					if err != nil {
						return fmt.Errorf("cannot run the activation command: %w", err)
					}
					rel = m.Activate
				}
				opts, err := a.activateOptions(cmd, runIt, timeout)
				if err != nil {
					return err
				}
				err = prof.Activate(cmd.Context(), name, target, root, rel, opts)
				var ae *profile.ActivationError
				if err != nil && !errors.As(err, &ae) {
					return err
				}
				fmt.Fprintf(a.stdout, "switched %s from generation %d to %d\n", name, cur, target)
				a.noteHold(prof, name)
				return err
			})
		},
	}
	c.Flags().Uint64Var(&to, "to", 0, "switch to generation `N`")
	c.Flags().BoolVar(&runIt, "run", false, "run the activation command of that generation")
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop the activation command after `DURATION` (default: config.toml's timeout, else 10m)")
	return c
}

// noteHold tells the user that a followed profile they switched back by
// hand is held there, and how to resume.
func (a *app) noteHold(prof *profile.Profiles, name string) {
	held, cur, highest, err := prof.HeldBack(name)
	if err != nil || !held {
		return
	}
	home, err := a.homeDir()
	if err != nil {
		return
	}
	fs, err := agent.LoadFollows(home)
	if err != nil {
		return
	}
	for _, f := range fs {
		if f.Name == name && f.Activate {
			fmt.Fprintf(a.stderr, "%s is held at generation %d: following activates only generations above %d; run `%s` to resume\n", name, cur, highest, f.Command())
		}
	}
}

func newGenerationsCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "generations NAME",
		Short: "List a profile's generations",
		Long: `List the generations of profile NAME: number, date, root, closure size, and
which is current. Every generation is a GC root until deleted.`,
		Example: `  trove generations laptop
  trove generations laptop --json
  trove generations delete laptop 1 2
  trove generations delete laptop 30d
  trove generations delete laptop +3`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := manifest.CheckName(args[0]); err != nil {
				return usageError{err}
			}
			return a.withStore(func(s *store.Store) error {
				gens, err := profile.OpenProfiles(s).Generations(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					if gens == nil {
						gens = []profile.Generation{}
					}
					return writeJSON(a.stdout, gens)
				}
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
	del := &cobra.Command{
		Use:   "delete NAME (N... | Nd | +N)",
		Short: "Delete old generations of a profile",
		Long: `Delete generations of NAME: the numbers given, those older than N days (Nd),
or all but the newest N (+N). The current generation is never deleted. Run
trove gc afterwards to free their paths.`,
		Example: `  trove generations delete laptop 1 2
  trove generations delete laptop 30d
  trove generations delete laptop +3`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := manifest.CheckName(name); err != nil {
				return usageError{err}
			}
			return a.withStore(func(s *store.Store) error {
				prof := profile.OpenProfiles(s)
				gens, err := prof.Generations(name)
				if err != nil {
					return err
				}
				var doomed []uint64
				for _, arg := range args[1:] {
					switch {
					case strings.HasSuffix(arg, "d"):
						days, err := strconv.Atoi(strings.TrimSuffix(arg, "d"))
						if err != nil || days < 0 {
							return usagef("%q: want a number of days like 30d", arg)
						}
						cutoff := time.Now().Add(-time.Duration(days) * 24 * time.Hour)
						for _, g := range gens {
							if g.Created.Before(cutoff) && !g.Current {
								doomed = append(doomed, g.Number)
							}
						}
					case strings.HasPrefix(arg, "+"):
						keep, err := strconv.Atoi(arg[1:])
						if err != nil || keep < 1 {
							return usagef("%q: want +N with N ≥ 1", arg)
						}
						for i, g := range gens {
							if i < len(gens)-keep && !g.Current {
								doomed = append(doomed, g.Number)
							}
						}
					default:
						n, err := strconv.ParseUint(arg, 10, 64)
						if err != nil || n == 0 {
							return usagef("%q: want a generation number, Nd or +N", arg)
						}
						doomed = append(doomed, n)
					}
				}
				if err := prof.Delete(name, doomed...); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "deleted %d %s of %s; run trove gc to free their paths\n", len(doomed), plural(len(doomed), "generation", "generations"), name)
				return nil
			})
		},
	}
	c.AddCommand(del)
	return c
}
