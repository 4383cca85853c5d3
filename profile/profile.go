package profile

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
)

// Profiles are named pointers to generations, as Nix's profiles:
// <home>/profiles/NAME → NAME-N-link → the root's tree in the store.
// Switching writes a new symlink beside NAME and renames it over NAME, so
// NAME always points at a whole generation, old or new, whatever happens.
type Profiles struct {
	dir   string
	store Store
}

// Store is what profiles need of a store: the closure of a root, which
// must be valid to become a generation, where a path's tree is (to run
// its activation), what generation links point at, and where the
// profiles live: the home's for the embedded store, Nix's own profiles
// directory for Nix's store, so that Nix's tools and garbage collector
// see the same generations.
type Store interface {
	StoreDir() string
	ProfilesDir() string
	Closure(roots ...nix.Path) ([]*nix.PathInfo, error)
	// ChunkIndexOf gives the chunk index of a valid path, which a store
	// may compute only when asked (Nix's store does): a manifest names
	// each path's index.
	ChunkIndexOf(h nix.PathHash) (chunk.Index, error)
	TreePath(p nix.Path) string
	LinkTarget(p nix.Path) string
}

// ProfilesDir is where a home keeps profiles for the embedded store.
func ProfilesDir(home string) string { return filepath.Join(home, "profiles") }

// OpenProfiles returns the profiles of the store.
func OpenProfiles(s Store) *Profiles {
	return &Profiles{dir: s.ProfilesDir(), store: s}
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

// entries lists the profiles directory: none before the first profile.
func (p *Profiles) entries() ([]os.DirEntry, error) {
	ents, err := os.ReadDir(p.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

// Generations lists a profile's generations, oldest first.
func (p *Profiles) Generations(name string) ([]Generation, error) {
	if err := manifest.CheckName(name); err != nil {
		return nil, err
	}
	cur, _ := p.Current(name)
	ents, err := p.entries()
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
func (p *Profiles) rootOf(link string) (nix.Path, error) {
	target, err := os.Readlink(link)
	if err != nil {
		return nix.Path{}, err
	}
	return nix.ParseBase(filepath.Base(target))
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
// activation to finish (an activation holds it at most its timeout); it
// fails clearly rather than hanging for ever. holder says who takes it (it
// is written into the lock file, so that a waiter can say what it waits
// for, and is called once the lock is taken); onWait, if set, is told once, with the current holder, that this
// call has to wait.
func (p *Profiles) Lock(ctx context.Context, name string, holder func() string, wait time.Duration, onWait func(holder string)) (unlock func(), err error) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(p.dir, "."+name+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if f.Truncate(0) == nil {
				f.WriteAt([]byte(holder()+"\n"), 0)
			}
			return func() { f.Truncate(0); f.Close() }, nil
		}
		other := lockHolder(f)
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another activation of %s is in progress (%s); try again when it has finished", name, other)
		}
		if !told && onWait != nil {
			onWait(other)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lockHolder reads who holds a profile's lock, as Lock wrote it.
func lockHolder(f *os.File) string {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		return s
	}
	return "held by another process"
}

// highestFile records a profile's high-water mark (see Highest).
func (p *Profiles) highestFile(name string) string {
	return filepath.Join(p.dir, "."+name+".highest")
}

// Highest is the highest generation profile name has been switched to:
// automatic following activates only generations above it, so that a
// manual rollback (or an activation of an older generation) holds until the
// user resumes (Resume, or activating the newest). It is never below the
// current generation.
func (p *Profiles) Highest(name string) (uint64, error) {
	cur, err := p.Current(name)
	if err != nil {
		return 0, err
	}
	rec, _, err := p.recordedHighest(name)
	return max(cur, rec), err
}

// recordedHighest reads the mark; a profile without one (made by an older
// trove) counts its newest generation link, and recorded is false.
func (p *Profiles) recordedHighest(name string) (h uint64, recorded bool, err error) {
	b, err := os.ReadFile(p.highestFile(name))
	if errors.Is(err, os.ErrNotExist) {
		ents, err := p.entries()
		for _, e := range ents {
			if n, ok := genOf(name, e.Name()); ok {
				h = max(h, n)
			}
		}
		return h, false, err
	}
	if err != nil {
		return 0, false, err
	}
	h, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", p.highestFile(name), err)
	}
	return h, true, nil
}

// HeldBack reports whether name is held at an older generation than the
// highest it was switched to, and both numbers.
func (p *Profiles) HeldBack(name string) (held bool, current, highest uint64, err error) {
	if current, err = p.Current(name); err != nil {
		return false, 0, 0, err
	}
	if highest, err = p.Highest(name); err != nil {
		return false, 0, 0, err
	}
	return current < highest, current, highest, nil
}

// Resume lets automatic following move on from the current generation:
// generations above it may be activated again.
func (p *Profiles) Resume(name string) error {
	if err := manifest.CheckName(name); err != nil {
		return err
	}
	cur, err := p.Current(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	return p.writeHighest(name, cur)
}

func (p *Profiles) writeHighest(name string, gen uint64) error {
	file := p.highestFile(name)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(gen, 10)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
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
func (p *Profiles) Switch(name string, gen uint64, root nix.Path) error {
	if err := manifest.CheckName(name); err != nil {
		return err
	}
	if _, err := p.store.Closure(root); err != nil {
		return fmt.Errorf("cannot activate %s generation %d: %w", name, gen, err)
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	// The mark is made durable before anything moves: so that it never
	// depends on generation links (which a user may delete), nor on the
	// write after an earlier switch that a crash lost (Highest counted the
	// current generation meanwhile; a switch down must not forget it).
	cur, err := p.Current(name)
	if err != nil {
		return err
	}
	rec, recorded, err := p.recordedHighest(name)
	if err != nil {
		return err
	}
	highest := max(cur, rec)
	if !recorded || highest > rec {
		if err := p.writeHighest(name, highest); err != nil {
			return fmt.Errorf("recording the highest generation of %s: %w", name, err)
		}
	}
	link := p.link(name, gen)
	if have, err := p.rootOf(link); err != nil || have != root {
		if err := symlinkAtomic(p.store.LinkTarget(root), link); err != nil {
			return err
		}
	}
	if err := symlinkAtomic(filepath.Base(link), filepath.Join(p.dir, name)); err != nil {
		return err
	}
	// A switch up is recorded after it is made: if this write is lost,
	// Highest still counts the current generation, and the next switch
	// records it before moving.
	if gen > highest {
		p.writeHighest(name, gen)
	}
	d, err := os.Open(p.dir)
	if err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Root returns the root of generation gen of NAME.
func (p *Profiles) Root(name string, gen uint64) (nix.Path, error) {
	root, err := p.rootOf(p.link(name, gen))
	if errors.Is(err, os.ErrNotExist) {
		return nix.Path{}, fmt.Errorf("%s has no generation %d (see trove generations %s)", name, gen, name)
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
func (p *Profiles) Roots() ([]nix.Path, error) {
	ents, err := p.entries()
	if err != nil {
		return nil, err
	}
	var out []nix.Path
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

// ActivationRecord is the outcome of a profile's last activation, kept in
// profiles/.NAME.activation so that it outlives the process: a command cut
// off by a crash or a stopped agent shows as interrupted.
type ActivationRecord struct {
	Generation uint64    `json:"generation"`
	Command    string    `json:"command,omitempty"`
	Result     string    `json:"result"` // ActivationOK, ...
	Error      string    `json:"error,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
}

// The results of an activation.
const (
	ActivationOK          = "ok"
	ActivationFailed      = "failed"
	ActivationRunning     = "running"
	ActivationInterrupted = "interrupted" // running when its process ended
	ActivationSkipped     = "switched"    // switched without running a command
)

func (p *Profiles) activationFile(name string) string {
	return filepath.Join(p.dir, "."+name+".activation")
}

// recordActivation writes rec; a failure to write it costs only the
// report, so it is not an error of the activation.
func (p *Profiles) recordActivation(name string, rec ActivationRecord) {
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	tmp := p.activationFile(name) + ".tmp"
	if os.WriteFile(tmp, append(b, '\n'), 0o644) == nil {
		os.Rename(tmp, p.activationFile(name))
	}
}

// LastActivation returns the outcome of name's last activation (nil if
// none is recorded). One recorded as running while nobody holds the
// profile's lock was cut off (a crash, a stopped agent): it is reported as
// interrupted.
func (p *Profiles) LastActivation(name string) (*ActivationRecord, error) {
	b, err := os.ReadFile(p.activationFile(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec ActivationRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", p.activationFile(name), err)
	}
	if rec.Result == ActivationRunning && !p.locked(name) {
		rec.Result = ActivationInterrupted
	}
	return &rec, nil
}

// locked reports whether an activation holds name's lock now.
func (p *Profiles) locked(name string) bool {
	f, err := os.Open(filepath.Join(p.dir, "."+name+".lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
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
func (p *Profiles) RunActivation(ctx context.Context, name string, gen uint64, root nix.Path, rel string, timeout time.Duration, stdout, stderr io.Writer) error {
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
	cmd := exec.CommandContext(ctx, cmdPath, activationArgs(rel)...)
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

// activationArgs are the arguments an activation command gets: none,
// except NixOS's bin/switch-to-configuration, which needs an action and
// gets "switch", as from nixos-rebuild switch.
func activationArgs(rel string) []string {
	if rel == "bin/switch-to-configuration" {
		return []string{"switch"}
	}
	return nil
}
