package sync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
)

// Profiles are named pointers to generations, as Nix's profiles:
// <home>/profiles/NAME → NAME-N-link → the root's tree in the store.
// Switching writes a new symlink beside NAME and renames it over NAME, so
// NAME always points at a whole generation, old or new, whatever happens.
type Profiles struct {
	dir   string
	store *store.Store
}

// ProfilesDir is where a home keeps profiles.
func ProfilesDir(home string) string { return filepath.Join(home, "profiles") }

// OpenProfiles returns the profiles of the store's home.
func OpenProfiles(s *store.Store) *Profiles {
	return &Profiles{dir: ProfilesDir(s.Home()), store: s}
}

// Generation is one generation of a profile.
type Generation struct {
	Number      uint64    `json:"generation"`
	Root        string    `json:"root"`
	Created     time.Time `json:"created"`
	ClosureSize uint64    `json:"closureSize"`
	Current     bool      `json:"current"`
}

func (p *Profiles) link(name string, gen uint64) string {
	return filepath.Join(p.dir, fmt.Sprintf("%s-%d-link", name, gen))
}

// Generations lists a profile's generations, oldest first.
func (p *Profiles) Generations(name string) ([]Generation, error) {
	if err := manifest.CheckName(name); err != nil {
		return nil, err
	}
	cur, _ := p.Current(name)
	ents, err := os.ReadDir(p.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Generation
	for _, e := range ents {
		n, ok := genOf(name, e.Name())
		if !ok {
			continue
		}
		root, err := p.rootOf(p.link(name, n))
		if err != nil {
			continue
		}
		g := Generation{Number: n, Root: root.Abs(p.store.StoreDir()), Current: n == cur}
		if fi, err := os.Lstat(p.link(name, n)); err == nil {
			g.Created = fi.ModTime()
		}
		if cl, err := p.store.Closure(root); err == nil {
			for _, pi := range cl {
				g.ClosureSize += pi.NarSize
			}
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Generation) int { return int(a.Number) - int(b.Number) })
	return out, nil
}

// genOf parses "NAME-N-link".
func genOf(name, file string) (uint64, bool) {
	s, ok := strings.CutPrefix(file, name+"-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "-link")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// rootOf reads the store path a generation link points at.
func (p *Profiles) rootOf(link string) (store.Path, error) {
	target, err := os.Readlink(link)
	if err != nil {
		return store.Path{}, err
	}
	return store.ParseBase(filepath.Base(target))
}

// Current returns the generation NAME points at (0 if none).
func (p *Profiles) Current(name string) (uint64, error) {
	target, err := os.Readlink(filepath.Join(p.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, ok := genOf(name, filepath.Base(target))
	if !ok {
		return 0, fmt.Errorf("profile %s points at %s, which is not a generation link", name, target)
	}
	return n, nil
}

// Lock takes the profile's activation lock, waiting up to wait for another
// activation to finish; it fails clearly rather than hanging for ever.
func (p *Profiles) Lock(name string, wait time.Duration) (unlock func(), err error) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(p.dir, "."+name+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another activation of %s is in progress; try again when it has finished", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// symlinkAtomic makes link point at target by renaming a fresh symlink over it.
func symlinkAtomic(target, link string) error {
	tmp := filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+".tmp")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Switch points NAME at generation gen, whose root must be valid in the
// store (with its closure), creating the generation link if needed. The
// caller holds the lock.
func (p *Profiles) Switch(name string, gen uint64, root store.Path) error {
	if err := manifest.CheckName(name); err != nil {
		return err
	}
	if _, err := p.store.Closure(root); err != nil {
		return fmt.Errorf("cannot activate %s generation %d: %w", name, gen, err)
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	link := p.link(name, gen)
	if have, err := p.rootOf(link); err != nil || have != root {
		if err := symlinkAtomic(p.store.TreePath(root), link); err != nil {
			return err
		}
	}
	if err := symlinkAtomic(filepath.Base(link), filepath.Join(p.dir, name)); err != nil {
		return err
	}
	d, err := os.Open(p.dir)
	if err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Root returns the root of generation gen of NAME.
func (p *Profiles) Root(name string, gen uint64) (store.Path, error) {
	root, err := p.rootOf(p.link(name, gen))
	if errors.Is(err, os.ErrNotExist) {
		return store.Path{}, fmt.Errorf("%s has no generation %d (see trove generations %s)", name, gen, name)
	}
	return root, err
}

// Delete removes generations (never the current one).
func (p *Profiles) Delete(name string, gens ...uint64) error {
	cur, err := p.Current(name)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g == cur {
			return fmt.Errorf("generation %d of %s is the current one; switch away from it first", g, name)
		}
		if err := os.Remove(p.link(name, g)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s has no generation %d", name, g)
			}
			return err
		}
	}
	return nil
}

// Roots returns every generation's root of every profile: GC roots.
func (p *Profiles) Roots() ([]store.Path, error) {
	ents, err := os.ReadDir(p.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []store.Path
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), "-link") {
			continue
		}
		if root, err := p.rootOf(filepath.Join(p.dir, e.Name())); err == nil {
			out = append(out, root)
		}
	}
	return out, nil
}

// ActivationError is a failed activation command: the new generation stays
// selected (as NixOS does) and the message says how to roll back.
type ActivationError struct {
	Name string
	Gen  uint64
	Err  error
}

func (e *ActivationError) Error() string {
	return fmt.Sprintf("the activation command of %s generation %d failed: %v; generation %d stays selected, run `trove rollback %s` to go back",
		e.Name, e.Gen, e.Err, e.Gen, e.Name)
}

func (e *ActivationError) Unwrap() error { return e.Err }

// RunActivation runs the activation command rel inside the root's tree,
// streaming its output, with a timeout (0 = none). The command gets the
// root in TROVE_ROOT and the profile and generation in TROVE_PROFILE and
// TROVE_GENERATION.
func (p *Profiles) RunActivation(ctx context.Context, name string, gen uint64, root store.Path, rel string, timeout time.Duration, stdout, stderr io.Writer) error {
	if rel == "" {
		return nil
	}
	tree := p.store.TreePath(root)
	cmdPath := filepath.Join(tree, filepath.FromSlash(rel))
	if !strings.HasPrefix(cmdPath, tree+string(filepath.Separator)) {
		return fmt.Errorf("activation command %q is outside the root", rel)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, cmdPath)
	cmd.Dir = tree
	cmd.Env = append(os.Environ(), "TROVE_ROOT="+tree, "TROVE_PROFILE="+filepath.Join(p.dir, name), "TROVE_GENERATION="+strconv.FormatUint(gen, 10))
	var tail bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, io.MultiWriter(stderr, &tail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return &ActivationError{Name: name, Gen: gen, Err: err}
	}
	return nil
}
