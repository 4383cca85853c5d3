package profile

import (
	"context"
	"errors"
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
// the next boot. The caller holds the lock.
func (p *Profiles) switchAtBoot(ctx context.Context, l place, name string, gen uint64, root nix.Path, rel string, o ActivateOptions) error {
	if err := p.Switch(name, gen, root); err != nil {
		return err
	}
	rec := ActivationRecord{Generation: gen, Command: rel, Result: ActivationAtBoot, Finished: time.Now()}
	switch {
	case !o.Run || rel == "":
		rec.Result = ActivationSkipped
		os.Remove(l.mark("boot"))
	case rel == "bin/switch-to-configuration":
		as, err := l.who(o.User)
		if err == nil {
			err = p.run(ctx, l, gen, root, []string{rel, "boot"}, true, as, o.Stdout, o.Stderr)
		}
		rec.Result, rec.Finished = ActivationOK, time.Now()
		if err != nil {
			rec.Result, rec.Error = ActivationFailed, err.Error()
			p.recordActivation(name, rec)
			return &ActivationError{Name: name, Gen: gen, Err: err}
		}
		os.Remove(l.mark("boot"))
	default:
		id, err := bootID()
		if err != nil {
			return fmt.Errorf("cannot defer the activation to the next boot: %w", err)
		}
		if err := writeJSON(l.mark("boot"), bootMark{Generation: gen, BootID: id, Activate: rel}); err != nil {
			return err
		}
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
	if readJSON(l.mark("boot"), &m) != nil {
		return 0
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
	if err := readJSON(l.mark("boot"), &m); err != nil {
		return 0, nil
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
	cur, err := l.current()
	if err != nil {
		return 0, err
	}
	defer os.Remove(l.mark("boot"))
	if cur != m.Generation {
		return 0, nil // switched by hand since
	}
	root, err := rootOf(l.gen(cur))
	if err != nil {
		return 0, err
	}
	rec := ActivationRecord{Generation: cur, Command: m.Activate, Result: ActivationRunning, Started: time.Now()}
	p.recordActivation(name, rec)
	err = p.RunActivation(ctx, name, cur, root, m.Activate, o.timeout(), o.User, o.Stdout, o.Stderr)
	rec.Result, rec.Finished = ActivationOK, time.Now()
	if err != nil {
		rec.Result, rec.Error = ActivationFailed, err.Error()
	}
	p.recordActivation(name, rec)
	return cur, err
}

func readJSON(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := jsonUnmarshal(b, v); err != nil {
		return errors.Join(fmt.Errorf("%s", file), err)
	}
	return nil
}
