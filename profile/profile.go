package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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

// Profiles are named pointers to generations, as Nix's profiles: the
// profile of configuration NAME is a symlink PROFILE → PROFILE-N-link →
// the root of generation N in the store, laid out exactly as `nix-env -p
// PROFILE` lays it out, so Nix's tools list and roll back the same
// generations. PROFILE is DIR/NAME in the store's profiles directory,
// unless another path was recorded for NAME (Record, trove's --profile).
// Switching writes a new symlink beside PROFILE and renames it over it, so
// it always points at a whole generation, old or new, whatever happens.
// trove's marks of a profile (its lock, highest generation and last
// activation) are dot files beside it, which Nix ignores.
type Profiles struct {
	dir   string
	store Store
	// used holds the paths given to Use: they count for this value only.
	used map[string]string
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
	// Home is the trove home, where the profile paths given with
	// --profile are recorded (PathsFile).
	Home() string
	// RootLink makes the new generation link link, which points at p, a
	// root of the store's garbage collector where that takes telling the
	// store: Nix's store registers it as nix-env does (an indirect root,
	// so a profile outside Nix's profiles directory keeps its
	// generations); the embedded store's collector is handed the
	// profiles' roots (Roots) instead.
	RootLink(link string, p nix.Path) error
}

// ProfilesDir is where a home keeps profiles for the embedded store.
func ProfilesDir(home string) string { return filepath.Join(home, "profiles") }

// OpenProfiles returns the profiles of the store.
func OpenProfiles(s Store) *Profiles {
	return &Profiles{dir: s.ProfilesDir(), store: s}
}

// place is where one profile lives: the absolute path of its link, with
// its generation links and trove's marks beside it.
type place string

// gen is the link of generation n: PROFILE-N-link, as nix-env names it.
func (l place) gen(n uint64) string { return fmt.Sprintf("%s-%d-link", l, n) }

// base is the profile link's file name, the prefix of its generation links.
func (l place) base() string { return filepath.Base(string(l)) }

func (l place) dir() string { return filepath.Dir(string(l)) }

// mark is one of trove's files about the profile: .BASE.KIND beside it.
func (l place) mark(kind string) string {
	return filepath.Join(l.dir(), "."+l.base()+"."+kind)
}

// place returns where name's profile lives: a path given to Use, else the
// one recorded for it, else DIR/NAME.
func (p *Profiles) place(name string) (place, error) {
	if err := manifest.CheckName(name); err != nil {
		return "", err
	}
	if path, ok := p.used[name]; ok {
		return place(path), nil
	}
	recs, err := LoadPaths(p.store.Home())
	if err != nil {
		return "", err
	}
	if path, ok := recs[name]; ok {
		return place(path), nil
	}
	return place(filepath.Join(p.dir, name)), nil
}

// Path is where name's profile link is (whether or not it exists yet).
func (p *Profiles) Path(name string) (string, error) {
	l, err := p.place(name)
	return string(l), err
}

// Generation is one generation of a profile.
type Generation struct {
	Number      uint64    `json:"generation"`
	Root        string    `json:"root"`
	Created     time.Time `json:"created"`
	ClosureSize uint64    `json:"closureSize"`
	Current     bool      `json:"current"`
}

// entries lists the directory a profile is in: none before the first
// profile.
func entries(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

// gens lists the numbers of a profile's generation links, unsorted.
func (l place) gens() ([]uint64, error) {
	ents, err := entries(l.dir())
	var out []uint64
	for _, e := range ents {
		if n, ok := genOf(l.base(), e.Name()); ok {
			out = append(out, n)
		}
	}
	return out, err
}

// Generations lists a profile's generations, oldest first.
func (p *Profiles) Generations(name string) ([]Generation, error) {
	l, err := p.place(name)
	if err != nil {
		return nil, err
	}
	cur, _ := l.current()
	ns, err := l.gens()
	if err != nil {
		return nil, err
	}
	var out []Generation
	for _, n := range ns {
		root, err := rootOf(l.gen(n))
		if err != nil {
			continue
		}
		g := Generation{Number: n, Root: root.Abs(p.store.StoreDir()), Current: n == cur}
		if fi, err := os.Lstat(l.gen(n)); err == nil {
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

// genOf parses "BASE-N-link", a generation link of profile BASE.
func genOf(base, file string) (uint64, bool) {
	s, ok := strings.CutPrefix(file, base+"-")
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
func rootOf(link string) (nix.Path, error) {
	target, err := os.Readlink(link)
	if err != nil {
		return nix.Path{}, err
	}
	return nix.ParseBase(filepath.Base(target))
}

// Current returns the generation NAME points at (0 if none).
func (p *Profiles) Current(name string) (uint64, error) {
	l, err := p.place(name)
	if err != nil {
		return 0, err
	}
	return l.current()
}

func (l place) current() (uint64, error) {
	target, err := os.Readlink(string(l))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, ok := genOf(l.base(), filepath.Base(target))
	if !ok {
		return 0, fmt.Errorf("profile %s points at %s, which is not a generation link", l, target)
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
	l, err := p.place(name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.dir(), 0o755); err != nil {
		return nil, err
	}
	// Not Nix's PROFILE.lock: Nix takes a lock file that is not empty for
	// a stale one and retries, and trove writes who holds its lock into it.
	f, err := os.OpenFile(l.mark("lock"), os.O_RDWR|os.O_CREATE, 0o644)
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

// Highest is the highest generation profile name has been switched to:
// automatic following activates only generations above it, so that a
// manual rollback (or an activation of an older generation) holds until the
// user resumes (Resume, or activating the newest). It is never below the
// current generation.
func (p *Profiles) Highest(name string) (uint64, error) {
	l, err := p.place(name)
	if err != nil {
		return 0, err
	}
	return l.highest()
}

func (l place) highest() (uint64, error) {
	cur, err := l.current()
	if err != nil {
		return 0, err
	}
	rec, _, err := l.recordedHighest()
	return max(cur, rec), err
}

// recordedHighest reads the mark; a profile without one (made by an older
// trove, or by Nix) counts its newest generation link, and recorded is
// false.
func (l place) recordedHighest() (h uint64, recorded bool, err error) {
	b, err := os.ReadFile(l.mark("highest"))
	if errors.Is(err, os.ErrNotExist) {
		ns, err := l.gens()
		for _, n := range ns {
			h = max(h, n)
		}
		return h, false, err
	}
	if err != nil {
		return 0, false, err
	}
	h, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", l.mark("highest"), err)
	}
	return h, true, nil
}

// HeldBack reports whether name is held at an older generation than the
// highest it was switched to, and both numbers.
func (p *Profiles) HeldBack(name string) (held bool, current, highest uint64, err error) {
	l, err := p.place(name)
	if err != nil {
		return false, 0, 0, err
	}
	if current, err = l.current(); err != nil {
		return false, 0, 0, err
	}
	if highest, err = l.highest(); err != nil {
		return false, 0, 0, err
	}
	return current < highest, current, highest, nil
}

// Resume lets automatic following move on from the current generation:
// generations above it may be activated again.
func (p *Profiles) Resume(name string) error {
	l, err := p.place(name)
	if err != nil {
		return err
	}
	cur, err := l.current()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.dir(), 0o755); err != nil {
		return err
	}
	return l.writeHighest(cur)
}

func (l place) writeHighest(gen uint64) error {
	return writeMark(l.mark("highest"), []byte(strconv.FormatUint(gen, 10)+"\n"))
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
	l, err := p.place(name)
	if err != nil {
		return err
	}
	if _, err := p.store.Closure(root); err != nil {
		return fmt.Errorf("cannot activate %s generation %d: %w", name, gen, err)
	}
	link := l.gen(gen)
	have, err := rootOf(link)
	linkMissing := errors.Is(err, os.ErrNotExist)
	if !linkMissing && (err != nil || have != root) {
		// A generation's number is its manifest's, and a history never
		// holds two manifests of one generation: a link that points
		// elsewhere was made by something else (nix-env, nixos-rebuild
		// on a profile trove was given), and replacing it would lose
		// that generation.
		return fmt.Errorf("cannot make generation %d of %s: %s exists and is not that generation (it points elsewhere); trove does not replace it: delete it (nix-env -p %s --delete-generations %d) or give %s another profile",
			gen, name, link, l, gen, name)
	}
	if err := os.MkdirAll(l.dir(), 0o755); err != nil {
		return err
	}
	// The mark is made durable before anything moves: so that it never
	// depends on generation links (which a user may delete), nor on the
	// write after an earlier switch that a crash lost (Highest counted the
	// current generation meanwhile; a switch down must not forget it).
	cur, err := l.current()
	if err != nil {
		return err
	}
	rec, recorded, err := l.recordedHighest()
	if err != nil {
		return err
	}
	highest := max(cur, rec)
	if !recorded || highest > rec {
		if err := l.writeHighest(highest); err != nil {
			return fmt.Errorf("recording the highest generation of %s: %w", name, err)
		}
	}
	if linkMissing {
		if err := symlinkAtomic(p.store.LinkTarget(root), link); err != nil {
			return err
		}
	}
	// As nix-env does for each generation it makes, whether or not
	// this one is new: a link made before is registered again.
	if err := p.store.RootLink(link, root); err != nil {
		return fmt.Errorf("making %s a GC root: %w", link, err)
	}
	if err := symlinkAtomic(filepath.Base(link), string(l)); err != nil {
		return err
	}
	// A switch up is recorded after it is made: if this write is lost,
	// Highest still counts the current generation, and the next switch
	// records it before moving.
	if gen > highest {
		l.writeHighest(gen)
	}
	d, err := os.Open(l.dir())
	if err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Root returns the root of generation gen of NAME.
func (p *Profiles) Root(name string, gen uint64) (nix.Path, error) {
	l, err := p.place(name)
	if err != nil {
		return nix.Path{}, err
	}
	root, err := rootOf(l.gen(gen))
	if errors.Is(err, os.ErrNotExist) {
		return nix.Path{}, fmt.Errorf("%s has no generation %d (see trove generations %s)", name, gen, name)
	}
	return root, err
}

// Delete removes generations (never the current one).
func (p *Profiles) Delete(name string, gens ...uint64) error {
	l, err := p.place(name)
	if err != nil {
		return err
	}
	cur, err := l.current()
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g == cur {
			return fmt.Errorf("generation %d of %s is the current one; switch away from it first", g, name)
		}
		if err := os.Remove(l.gen(g)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s has no generation %d", name, g)
			}
			return err
		}
	}
	return nil
}

// Roots returns every generation's root of every profile, those in the
// profiles directory and those recorded elsewhere: GC roots.
func (p *Profiles) Roots() ([]nix.Path, error) {
	ents, err := entries(p.dir)
	if err != nil {
		return nil, err
	}
	var out []nix.Path
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), "-link") {
			continue
		}
		if root, err := rootOf(filepath.Join(p.dir, e.Name())); err == nil {
			out = append(out, root)
		}
	}
	recs, err := LoadPaths(p.store.Home())
	if err != nil {
		return nil, err
	}
	for _, path := range recs {
		ns, err := place(path).gens()
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			if root, err := rootOf(place(path).gen(n)); err == nil {
				out = append(out, root)
			}
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
	ActivationInterrupted = "interrupted"  // running when its process ended
	ActivationSkipped     = "switched"     // switched without running a command
	ActivationChecking    = "checking"     // its health checks are running
	ActivationRolledBack  = "rolled back"  // failed its activation or checks, and was undone
	ActivationAtBoot      = "at next boot" // switched; its command runs after the next boot
)

// recordActivation writes rec; a failure to write it costs only the
// report, so it is not an error of the activation.
func (p *Profiles) recordActivation(name string, rec ActivationRecord) {
	l, err := p.place(name)
	if err != nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	writeMark(l.mark("activation"), append(b, '\n'))
}

// LastActivation returns the outcome of name's last activation (nil if
// none is recorded). One recorded as running while nobody holds the
// profile's lock was cut off (a crash, a stopped agent): it is reported as
// interrupted.
func (p *Profiles) LastActivation(name string) (*ActivationRecord, error) {
	l, err := p.place(name)
	if err != nil {
		return nil, err
	}
	rec, err := l.lastActivation()
	if err != nil || rec == nil || (rec.Result != ActivationRunning && rec.Result != ActivationChecking) || l.locked() {
		return rec, err
	}
	// An activation writes its outcome before it lets go of the lock: read
	// again, now that nobody holds it, or one that ended between the read
	// and the look at the lock would pass for interrupted.
	if rec, err = l.lastActivation(); err == nil && rec != nil && (rec.Result == ActivationRunning || rec.Result == ActivationChecking) {
		rec.Result = ActivationInterrupted
	}
	return rec, err
}

func (l place) lastActivation() (*ActivationRecord, error) {
	b, err := os.ReadFile(l.mark("activation"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec ActivationRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", l.mark("activation"), err)
	}
	return &rec, nil
}

// locked reports whether an activation holds the profile's lock now.
func (l place) locked() bool {
	f, err := os.Open(l.mark("lock"))
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
// streaming its output, with a timeout (0 = none), as user (a name; ""
// is the profile's owner, runas.go). The command gets the root in
// TROVE_ROOT and the profile and generation in TROVE_PROFILE and
// TROVE_GENERATION.
func (p *Profiles) RunActivation(ctx context.Context, name string, gen uint64, root nix.Path, rel string, timeout time.Duration, user string, stdout, stderr io.Writer) error {
	if rel == "" {
		return nil
	}
	l, err := p.place(name)
	if err != nil {
		return err
	}
	as, err := l.who(user)
	if err != nil {
		return &ActivationError{Name: name, Gen: gen, Err: err}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err = p.run(ctx, l, gen, root, append([]string{rel}, activationArgs(rel)...), true, false, as, stdout, stderr)
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
