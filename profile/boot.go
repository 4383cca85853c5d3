package profile

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// Switching at the next boot (ActivateOptions.AtBoot, follow --when
// boot). The profile switches now, so the next boot uses the new
// generation. NixOS's bin/switch-to-configuration is run with "boot"
// (it installs the boot entry and leaves the running system alone, as
// nixos-rebuild boot does). Any other activation command is not run now:
// a .NAME.boot mark records this boot's ID, and the first follower pass
// after a reboot (RunAtBoot) runs the current generation's command.

// bootIDFile names the running boot; it changes at every boot.
var bootIDFile = "/proc/sys/kernel/random/boot_id"

func bootID() (string, error) {
	b, err := os.ReadFile(bootIDFile)
	return strings.TrimSpace(string(b)), err
}

type bootMark struct {
	Generation uint64 `json:"generation"`
	BootID     string `json:"bootID"`
	Activate   string `json:"activate"`
}

// switchAtBoot switches name to gen and arranges for its activation at
// the next boot. The caller holds the lock. The mark is written before
// the switch, so that a crash between them still leaves the activation
// pending; with NixOS's command it is removed once `boot` has installed
// the boot entry (a crash before that leaves it, and the command runs,
// with "switch", after the next boot).
func (p *Profiles) switchAtBoot(ctx context.Context, l place, name string, gen uint64, root nix.Path, rel string, o ActivateOptions) error {
	if !o.Run || rel == "" {
		if err := p.Switch(name, gen, root); err != nil {
			return err
		}
		os.Remove(l.mark("boot"))
		p.recordActivation(name, ActivationRecord{Generation: gen, Result: ActivationSkipped, Finished: time.Now()})
		return nil
	}
	id, err := bootID()
	if err != nil {
		return fmt.Errorf("cannot defer the activation to the next boot: %w", err)
	}
	if err := os.MkdirAll(l.dir(), 0o755); err != nil {
		return err
	}
	if err := writeJSON(l.mark("boot"), bootMark{Generation: gen, BootID: id, Activate: rel}); err != nil {
		return err
	}
	if err := p.Switch(name, gen, root); err != nil {
		os.Remove(l.mark("boot"))
		return err
	}
	rec := ActivationRecord{Generation: gen, Command: rel, Result: ActivationAtBoot, Finished: time.Now()}
	if rel == "bin/switch-to-configuration" {
		as, err := l.who(o.User)
		if err == nil {
			bctx, cancel := context.WithTimeout(ctx, o.timeout())
			err = p.run(bctx, l, gen, root, []string{rel, "boot"}, true, false, as, o.Stdout, o.Stderr)
			if bctx.Err() == context.DeadlineExceeded {
				err = fmt.Errorf("timed out after %s", o.timeout())
			}
			cancel()
		}
		rec.Result, rec.Finished = ActivationOK, time.Now()
		if err != nil {
			rec.Result, rec.Error = ActivationFailed, err.Error()
			p.recordActivation(name, rec)
			return &ActivationError{Name: name, Gen: gen, Err: err}
		}
		os.Remove(l.mark("boot"))
	}
	p.recordActivation(name, rec)
	return nil
}

// PendingAtBoot says which generation's activation waits for the next
// boot (0: none).
func (p *Profiles) PendingAtBoot(name string) uint64 {
	l, err := p.place(name)
	if err != nil {
		return 0
	}
	var m bootMark
	if ok, _ := readOwnMark(l.mark("boot"), &m); !ok {
		return 0
	}
	if id, err := bootID(); err == nil && id != m.BootID {
		return 0 // rebooted: RunAtBoot's to run now
	}
	return m.Generation
}

// RunAtBoot runs, once the machine has rebooted since a switch at boot
// was made, the activation command of the generation the profile is on,
// if it is still that one. It returns the generation it activated (0:
// nothing was due).
func (p *Profiles) RunAtBoot(ctx context.Context, name string, o ActivateOptions) (uint64, error) {
	l, err := p.place(name)
	if err != nil {
		return 0, err
	}
	var m bootMark
	if ok, err := readOwnMark(l.mark("boot"), &m); !ok || err != nil {
		return 0, err
	}
	if id, err := bootID(); err != nil || id == m.BootID {
		return 0, nil // not rebooted yet
	}
	unlock, err := p.Lock(ctx, name, func() string {
		return fmt.Sprintf("activating generation %d after the boot, pid %d", m.Generation, os.Getpid())
	}, o.wait(), o.OnWait)
	if err != nil {
		return 0, err
	}
	defer unlock()
	// Again under the lock: another process may have run it, or made a
	// newer one.
	if ok, err := readOwnMark(l.mark("boot"), &m); !ok || err != nil {
		return 0, err
	}
	if id, err := bootID(); err != nil || id == m.BootID {
		return 0, nil
	}
	cur, err := l.current()
	if err != nil {
		return 0, err
	}
	if cur != m.Generation || !manifestCommand(m.Activate) {
		os.Remove(l.mark("boot"))
		return 0, nil // switched by hand since
	}
	root, err := rootOf(l.gen(cur))
	if err != nil {
		return 0, err
	}
	rec := ActivationRecord{Generation: cur, Command: m.Activate, Result: ActivationRunning, Started: time.Now()}
	p.recordActivation(name, rec)
	err = p.RunActivation(ctx, name, cur, root, m.Activate, o.timeout(), o.User, o.Stdout, o.Stderr)
	if ctx.Err() != nil {
		return 0, ctx.Err() // stopped: the mark stays, the next start runs it
	}
	os.Remove(l.mark("boot"))
	rec.Result, rec.Finished = ActivationOK, time.Now()
	if err != nil {
		rec.Result, rec.Error = ActivationFailed, err.Error()
	}
	p.recordActivation(name, rec)
	return cur, err
}
