package profile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
)

// Commands are what a generation runs on a follower, each relative to its
// root ("" for none): the activation command and the health check.
type Commands struct {
	Activate string
	Check    string
}

// Publish makes generation N+1 of name from the closure of root, which must
// be valid locally, signs it with key and records it in the history. The
// caller announces it.
func Publish(s Store, h *manifest.History, key manifest.SecretKey, name string, root nix.Path, cmds Commands) (*manifest.Manifest, []byte, error) {
	if err := manifest.CheckName(name); err != nil {
		return nil, nil, err
	}
	if err := manifest.CheckCommand("activation command", cmds.Activate); err != nil {
		return nil, nil, err
	}
	if err := manifest.CheckCommand("health check", cmds.Check); err != nil {
		return nil, nil, err
	}
	closure, err := s.Closure(root)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot publish %s: %w", root.Abs(s.StoreDir()), err)
	}
	for _, pi := range closure {
		if pi.ChunkIndex == (chunk.ID{}) {
			ix, err := s.ChunkIndexOf(pi.Path.Hash)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot publish %s: indexing %s: %w", root.Abs(s.StoreDir()), pi.Path.Abs(s.StoreDir()), err)
			}
			pi.ChunkIndex = ix.ID()
		}
	}
	m := &manifest.Manifest{Name: name, Generation: 1, Root: root, Activate: cmds.Activate, Check: cmds.Check, Created: time.Now(), Paths: closure}
	if prev, prevBytes, err := h.Get(name, 0); err == nil {
		m.Generation = prev.Generation + 1
		m.Previous, _ = idOf(prevBytes)
	} else if !errors.Is(err, manifest.ErrUnknown) {
		return nil, nil, err
	}
	if err := m.Sign(key); err != nil {
		return nil, nil, err
	}
	b, err := m.Encode()
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := h.Add(b); err != nil {
		return nil, nil, fmt.Errorf("recording the new generation: %w", err)
	}
	return m, b, nil
}

func idOf(b []byte) (manifest.ID, error) {
	m, err := manifest.Decode(b)
	if err != nil {
		return manifest.ID{}, err
	}
	return m.ID()
}

// DefaultActivationTimeout bounds an activation command when nothing else
// is configured: a hanging command must not hold a profile for ever.
const DefaultActivationTimeout = 10 * time.Minute

// ActivateOptions say how to activate a generation.
type ActivateOptions struct {
	Run bool // run the activation command
	// Timeout bounds the activation command (0: DefaultActivationTimeout);
	// when it passes, the command's whole process group is killed.
	Timeout time.Duration
	// Wait bounds the wait for another activation of the same profile
	// (0: DefaultActivationTimeout and a little more, the longest another
	// activation with the default timeout can hold the profile).
	Wait time.Duration
	// OnWait, if set, is told once that another activation holds the
	// profile, and which.
	OnWait func(holder string)
	// Following marks an automatic activation: it switches only to a
	// generation above the profile's highest (checked under the lock, so
	// that a manual rollback made meanwhile holds), else ErrNotNewer.
	Following bool
	// AtBoot switches now and activates at the next boot (boot.go).
	AtBoot bool
	// User runs the activation command and checks as this user (a name
	// or uid), with a clean environment; "" is the profile's owner for a
	// profile outside the system profiles (runas.go).
	User string
	// Checks, Healthy and a following activation make the activation a
	// trial (checked.go): the activation command, the checks and Healthy
	// must all succeed within CheckTimeout of the switch (0:
	// DefaultCheckTimeout), or the profile rolls back to the generation it
	// had, running its command (ActivateOf names a generation's, asked
	// under the lock for the generation the profile is on) if Run.
	Checks       []Check
	Healthy      func(context.Context) error
	CheckTimeout time.Duration
	ActivateOf   func(gen uint64) string
	Stdout       io.Writer
	Stderr       io.Writer
}

func (o ActivateOptions) checkTimeout() time.Duration {
	if o.CheckTimeout > 0 {
		return o.CheckTimeout
	}
	return DefaultCheckTimeout
}

// onTrial says whether an activation is checked.
func (o ActivateOptions) onTrial() bool {
	return o.Following && (len(o.Checks) > 0 || o.Healthy != nil)
}

func (o ActivateOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultActivationTimeout
}

func (o ActivateOptions) wait() time.Duration {
	if o.Wait > 0 {
		return o.Wait
	}
	return DefaultActivationTimeout + 15*time.Second
}

// Activate switches profile m.Name to m's generation (its closure must be
// valid) and, if asked, runs its activation command.
func Activate(ctx context.Context, p *Profiles, m *manifest.Manifest, o ActivateOptions) error {
	return p.Activate(ctx, m.Name, m.Generation, m.Root, m.Activate, o)
}

// Activate switches profile name to generation gen with the given root
// under the profile's lock and, if asked, runs its activation command
// (rel, relative to the root) for at most the timeout. Activating a new
// generation and rolling back to an old one are the same operation.
func (p *Profiles) Activate(ctx context.Context, name string, gen uint64, root nix.Path, rel string, o ActivateOptions) error {
	holder := func() string {
		h := fmt.Sprintf("generation %d, pid %d", gen, os.Getpid())
		if o.Run && rel != "" {
			h += fmt.Sprintf(", running %s until %s at the latest", rel, time.Now().Add(o.timeout()).Format("15:04:05"))
		}
		return h
	}
	unlock, err := p.Lock(ctx, name, holder, o.wait(), o.OnWait)
	if err != nil {
		return err
	}
	defer unlock()
	if !o.Following {
		// A hand-made activation settles a trial a dead process left
		// undecided: the user chose, and Recover must not undo it.
		if l, err := p.place(name); err == nil {
			os.Remove(l.mark("trial"))
		}
	}
	if o.Following {
		highest, err := p.Highest(name)
		if err != nil {
			return err
		}
		if gen <= highest {
			return fmt.Errorf("%s generation %d: %w (%d)", name, gen, ErrNotNewer, highest)
		}
		l, err := p.place(name)
		if err != nil {
			return err
		}
		if failed, err := l.failedHere(gen); err != nil {
			return err
		} else if failed {
			return fmt.Errorf("%s generation %d: %w", name, gen, ErrFailedHere)
		}
		if o.AtBoot {
			if _, err := p.store.Closure(root); err != nil {
				return fmt.Errorf("cannot activate %s generation %d: %w", name, gen, err)
			}
			return p.switchAtBoot(ctx, l, name, gen, root, rel, o)
		}
		if o.onTrial() {
			if _, err := p.store.Closure(root); err != nil {
				return fmt.Errorf("cannot activate %s generation %d: %w", name, gen, err)
			}
			return p.activateChecked(ctx, l, name, gen, root, rel, o)
		}
	}
	if err := p.Switch(name, gen, root); err != nil {
		return err
	}
	if !o.Run || rel == "" {
		p.recordActivation(name, ActivationRecord{Generation: gen, Result: ActivationSkipped, Finished: time.Now()})
		return nil
	}
	rec := ActivationRecord{Generation: gen, Command: rel, Result: ActivationRunning, Started: time.Now()}
	p.recordActivation(name, rec)
	err = p.RunActivation(ctx, name, gen, root, rel, o.timeout(), o.User, o.Stdout, o.Stderr)
	rec.Result, rec.Finished = ActivationOK, time.Now()
	switch {
	case err != nil && ctx.Err() != nil:
		rec.Result, rec.Error = ActivationInterrupted, err.Error()
	case err != nil:
		rec.Result, rec.Error = ActivationFailed, err.Error()
	}
	p.recordActivation(name, rec)
	return err
}

// ErrNotNewer refuses an automatic activation of a generation at or below
// the profile's highest.
var ErrNotNewer = errors.New("not newer than every generation the profile has had")
