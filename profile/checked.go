package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
)

// Checked activation. A follower that has health checks (the generation's
// own, published with it, and the follower's) activates a new generation
// on trial: it writes a trial mark (.NAME.trial) before switching, runs
// the activation command, then the checks, all within the check deadline.
// If the activation fails, a check fails or the deadline passes, it rolls
// back under the same lock: switches to the generation it had, runs that
// generation's activation command, and marks the new one failed on this
// machine (.NAME.failed), so that following never activates it again (a
// manual activate still can). Only then is the trial mark removed. A
// process killed in the middle leaves the mark, and Recover, when the
// agent comes back, finishes the rollback: a generation that was not
// proven healthy does not stay.

// DefaultCheckTimeout is the check deadline when none is configured: from
// the switch, the activation command and every check must be done by then.
const DefaultCheckTimeout = 2 * time.Minute

// Check is a health check: Rel, relative to the generation's root (its
// published check), or Shell, a command line of the follower's own run
// with /bin/sh -c.
type Check struct {
	Rel   string
	Shell string
}

func (c Check) String() string {
	if c.Rel != "" {
		return c.Rel
	}
	return c.Shell
}

// trial is the mark a checked activation leaves until it is decided.
type trial struct {
	Generation uint64    `json:"generation"`
	Previous   uint64    `json:"previous"` // 0: the profile had none
	PrevRoot   string    `json:"previousRoot,omitempty"`
	PrevRel    string    `json:"previousActivate,omitempty"`
	Run        bool      `json:"run"`
	Started    time.Time `json:"started"`
	Deadline   time.Time `json:"deadline"`
}

// Failure is a generation that failed on this machine.
type Failure struct {
	Generation uint64    `json:"generation"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// maxFailures bounds the failure marks kept (the newest).
const maxFailures = 64

// RolledBackError: a checked activation failed and the profile is back on
// the generation it had.
type RolledBackError struct {
	Name     string
	Gen      uint64
	Previous uint64
	Reason   error
	// RollbackErr is set when the rollback itself went wrong (the previous
	// generation's activation command failed).
	RollbackErr error
}

func (e *RolledBackError) Error() string {
	back := fmt.Sprintf("rolled back to generation %d", e.Previous)
	if e.Previous == 0 {
		back = "rolled back (the profile had no generation before)"
	}
	msg := fmt.Sprintf("%s generation %d failed on this machine (%v); %s, and it will not be activated automatically again", e.Name, e.Gen, e.Reason, back)
	if e.RollbackErr != nil {
		msg += fmt.Sprintf("; but the previous generation's activation failed too: %v", e.RollbackErr)
	}
	return msg
}

func (e *RolledBackError) Unwrap() error { return e.Reason }

// ErrFailedHere refuses to follow into a generation that failed on this
// machine before.
var ErrFailedHere = errors.New("failed on this machine before")

// Failures lists the generations of name that failed on this machine.
func (p *Profiles) Failures(name string) ([]Failure, error) {
	l, err := p.place(name)
	if err != nil {
		return nil, err
	}
	return l.failures()
}

func (l place) failures() ([]Failure, error) {
	b, err := os.ReadFile(l.mark("failed"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fs []Failure
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, fmt.Errorf("%s: %w", l.mark("failed"), err)
	}
	return fs, nil
}

func (l place) failedHere(gen uint64) (bool, error) {
	fs, err := l.failures()
	for _, f := range fs {
		if f.Generation == gen {
			return true, err
		}
	}
	return false, err
}

func (l place) markFailed(f Failure) error {
	fs, _ := l.failures() // an unreadable file is replaced
	fs = append(fs, f)
	if len(fs) > maxFailures {
		fs = fs[len(fs)-maxFailures:]
	}
	return writeJSON(l.mark("failed"), fs)
}

func writeJSON(file string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeMark(file, append(b, '\n'))
}

// writeMark writes a profile's mark; tests make it fail.
var writeMark = writeFileAtomic

// writeFileAtomic replaces file with data, synced, through a fresh
// temporary name, never an existing file or link: a profile's directory
// may belong to its user, who must not point the agent's writes
// elsewhere. Every mark of a profile is written this way.
func writeFileAtomic(file string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err = f.Chmod(0o644); err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, file)
}

func (l place) readTrial() (*trial, error) {
	var t trial
	ok, err := readOwnMark(l.mark("trial"), &t)
	if !ok || err != nil {
		return nil, err
	}
	return &t, nil
}

// readOwnMark reads a mark this process's user wrote. One written by
// anyone else (the user owning a per-user profile's directory) is not
// acted on: it is removed, and ok is false.
func readOwnMark(file string, v any) (ok bool, err error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if st, isUnix := fi.Sys().(*syscall.Stat_t); !isUnix || st.Uid != uint32(os.Geteuid()) || !fi.Mode().IsRegular() {
		os.Remove(file)
		return false, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", file, err)
	}
	return true, nil
}

// checked runs the trial of generation gen, just switched to from t's
// previous one: the activation command (if o.Run), then the checks and
// o.Healthy, all by t.Deadline. It returns why the generation failed, or
// nil.
func (p *Profiles) checked(ctx context.Context, l place, name string, gen uint64, root nix.Path, rel string, o ActivateOptions, t *trial) error {
	ctx, cancel := context.WithDeadline(ctx, t.Deadline)
	defer cancel()
	if o.Run && rel != "" {
		rec := ActivationRecord{Generation: gen, Command: rel, Result: ActivationRunning, Started: time.Now()}
		p.recordActivation(name, rec)
		if err := p.RunActivation(ctx, name, gen, root, rel, 0, o.User, o.Stdout, o.Stderr); err != nil {
			return fmt.Errorf("its activation command failed: %w", unwrapActivation(err, ctx))
		}
	}
	p.recordActivation(name, ActivationRecord{Generation: gen, Command: rel, Result: ActivationChecking, Started: time.Now()})
	for _, c := range o.Checks {
		if err := p.runCheck(ctx, l, gen, root, c, o.User, o.Stdout, o.Stderr); err != nil {
			return fmt.Errorf("health check %s: %w", c, err)
		}
	}
	if o.Healthy != nil {
		if err := o.Healthy(ctx); err != nil {
			return fmt.Errorf("after activating: %w", err)
		}
	}
	return nil
}

// unwrapActivation turns a deadline into words.
func unwrapActivation(err error, ctx context.Context) error {
	if ctx.Err() == context.DeadlineExceeded {
		return errors.New("the check deadline passed")
	}
	var ae *ActivationError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err
}

// runCheck runs one check in the root's tree, its whole process group
// killed when ctx ends.
func (p *Profiles) runCheck(ctx context.Context, l place, gen uint64, root nix.Path, c Check, user string, stdout, stderr io.Writer) error {
	as, err := l.who(user)
	if err != nil {
		return err
	}
	argv, rel := []string{c.Rel}, true
	if c.Rel == "" {
		argv, rel = []string{"/bin/sh", "-c", c.Shell}, false
	}
	err = p.run(ctx, l, gen, root, argv, rel, true, as, stdout, stderr)
	if ctx.Err() == context.DeadlineExceeded {
		return errors.New("did not finish before the check deadline (killed)")
	}
	return err
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// rollback puts the profile back on t's previous generation, runs its
// activation command (if the trial ran one), marks t's generation failed
// for why, and removes the trial mark. The caller holds the lock. Each
// step can be done again: stopped (ctx ends) before the previous
// generation's activation has run, it leaves the mark, and the next
// Recover switches (if need be) and runs it.
func (p *Profiles) rollback(ctx context.Context, l place, name string, t *trial, why error, o ActivateOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var rollbackErr error
	cur, err := l.current()
	if err != nil {
		return err
	}
	// The previous generation is what its link says, whatever the mark
	// says (PrevRoot only records it).
	var prev nix.Path
	if t.Previous != 0 {
		if prev, err = rootOf(l.gen(t.Previous)); err != nil {
			return fmt.Errorf("rolling %s back to generation %d: %w; the trial stays recorded and is tried again", name, t.Previous, err)
		}
	}
	if cur == t.Generation {
		var err error
		if t.Previous == 0 {
			err = os.Remove(string(l))
		} else {
			err = p.Switch(name, t.Previous, prev)
		}
		if err != nil {
			return fmt.Errorf("rolling %s back from generation %d failed: %w; the trial stays recorded and is tried again", name, t.Generation, err)
		}
		cur = t.Previous
	}
	// (Another generation selected by hand meanwhile is left alone.)
	if cur == t.Previous && t.Previous != 0 && t.Run && t.PrevRel != "" && manifestCommand(t.PrevRel) {
		rollbackErr = p.RunActivation(ctx, name, t.Previous, prev, t.PrevRel, o.timeout(), o.User, o.Stdout, o.Stderr)
		if ctx.Err() != nil {
			return ctx.Err() // stopped: the next Recover runs it again
		}
	}
	if err := l.markFailed(Failure{Generation: t.Generation, Reason: why.Error(), At: time.Now()}); err != nil && rollbackErr == nil {
		rollbackErr = fmt.Errorf("recording the failure: %w", err)
	}
	p.recordActivation(name, ActivationRecord{Generation: t.Generation, Result: ActivationRolledBack, Error: why.Error(), Started: t.Started, Finished: time.Now()})
	os.Remove(l.mark("trial"))
	return &RolledBackError{Name: name, Gen: t.Generation, Previous: t.Previous, Reason: why, RollbackErr: rollbackErr}
}

// Recover finishes what a checked activation of name left undecided when
// its process died (kill -9, a crash, a power cut during activation,
// checks or rollback): the profile goes back to the generation it had,
// with that generation's activation run, and the one on trial is marked
// failed. It returns the RolledBackError, or nil when nothing was left.
func (p *Profiles) Recover(ctx context.Context, name string, o ActivateOptions) error {
	l, err := p.place(name)
	if err != nil {
		return err
	}
	if t, err := l.readTrial(); err != nil || t == nil {
		return err
	}
	unlock, err := p.Lock(ctx, name, func() string { return fmt.Sprintf("finishing a rollback, pid %d", os.Getpid()) }, o.wait(), o.OnWait)
	if err != nil {
		return err
	}
	defer unlock()
	t, err := l.readTrial()
	if err != nil || t == nil {
		return err
	}
	return p.rollback(ctx, l, name, t, errors.New("interrupted before its checks passed (the agent stopped)"), o)
}

// activateChecked is Activate for an activation with checks; the caller
// holds the lock and has made sure the closure is valid.
func (p *Profiles) activateChecked(ctx context.Context, l place, name string, gen uint64, root nix.Path, rel string, o ActivateOptions) error {
	prev, err := l.current()
	if err != nil {
		return err
	}
	t := &trial{Generation: gen, Previous: prev, Run: o.Run, Started: time.Now()}
	t.Deadline = t.Started.Add(o.checkTimeout())
	if prev != 0 {
		r, err := rootOf(l.gen(prev))
		if err != nil {
			return fmt.Errorf("reading generation %d of %s, to come back to: %w", prev, name, err)
		}
		t.PrevRoot = r.Abs(p.store.StoreDir())
		if o.ActivateOf != nil {
			t.PrevRel = o.ActivateOf(prev)
		}
	}
	if err := os.MkdirAll(l.dir(), 0o755); err != nil {
		return err
	}
	if err := writeJSON(l.mark("trial"), t); err != nil {
		return fmt.Errorf("recording the trial of %s generation %d: %w", name, gen, err)
	}
	if err := p.Switch(name, gen, root); err != nil {
		os.Remove(l.mark("trial"))
		return err
	}
	if why := p.checked(ctx, l, name, gen, root, rel, o, t); why != nil {
		if ctx.Err() != nil && !time.Now().After(t.Deadline) {
			// Stopped, not failed: the mark stays, Recover decides.
			return why
		}
		return p.rollback(context.WithoutCancel(ctx), l, name, t, why, o)
	}
	p.recordActivation(name, ActivationRecord{Generation: gen, Command: rel, Result: ActivationOK, Started: t.Started, Finished: time.Now()})
	return os.Remove(l.mark("trial"))
}

// manifestCommand says whether rel could be a manifest's command (a
// clean path inside the root), as marks are not trusted further.
func manifestCommand(rel string) bool {
	return manifest.CheckCommand("command", rel) == nil
}
