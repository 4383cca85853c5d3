package profile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// Activation commands and checks run as the profile's user. A profile in
// the system profiles directory (/nix/var/nix/profiles: a NixOS system, the
// default profile) is root's; any other profile (a home-manager profile
// under ~/.local/state/nix/profiles, /nix/var/nix/profiles/per-user/NAME)
// is its owner's: the owner of the directory it is in, unless
// ActivateOptions.User names one. A command run as another user than this
// process's gets that user's IDs and groups and a clean environment
// (HOME, USER, LOGNAME, SHELL, PATH and the TROVE_ variables): a
// per-user configuration never runs as root, nor with the agent's
// environment.

// SystemProfiles is where system profiles live.
const SystemProfiles = "/nix/var/nix/profiles"

// runAs is who a command runs as; nil is this process, with its
// environment.
type runAs struct {
	uid, gid uint32
	groups   []uint32
	name     string
	home     string
	shell    string
}

// lookupUser resolves a user name (or numeric ID) to run commands as.
func lookupUser(name string) (*runAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("user %q: no such user on this machine", name)
		}
	}
	return fromUser(u)
}

func fromUser(u *user.User) (*runAs, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %s: %w", u.Username, err)
	}
	r := &runAs{uid: uint32(uid), gid: uint32(gid), name: u.Username, home: u.HomeDir, shell: "/bin/sh"}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				r.groups = append(r.groups, uint32(n))
			}
		}
	}
	return r, nil
}

// who decides whom l's commands run as: explicit (a user name), else the
// owner of a profile outside the system profiles. nil: this process as it
// is (the owner is this process's user, or the profile is a system one).
func (l place) who(explicit string) (*runAs, error) {
	if explicit != "" {
		r, err := lookupUser(explicit)
		if err != nil {
			return nil, err
		}
		if r.uid != uint32(os.Geteuid()) && os.Geteuid() != 0 {
			return nil, fmt.Errorf("cannot run %s's activation as %s: only root can run commands as another user", l, r.name)
		}
		return r, nil
	}
	if filepath.Clean(l.dir()) == SystemProfiles {
		return nil, nil
	}
	fi, err := os.Stat(l.dir())
	if err != nil {
		return nil, nil // made at the switch, by this process
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == uint32(os.Geteuid()) || os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10))
	if err != nil {
		return nil, fmt.Errorf("%s belongs to uid %d, which has no user here: give --user", l.dir(), st.Uid)
	}
	return fromUser(u)
}

// command is argv run in the root's tree for generation gen of profile l,
// as as says, in its own process group (killed whole when ctx ends).
func (l place) command(ctx context.Context, tree string, gen uint64, argv []string, as *runAs) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = tree
	vars := []string{"TROVE_ROOT=" + tree, "TROVE_PROFILE=" + string(l), "TROVE_GENERATION=" + strconv.FormatUint(gen, 10)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if as == nil {
		cmd.Env = append(os.Environ(), vars...)
	} else {
		cmd.Env = append([]string{"HOME=" + as.home, "USER=" + as.name, "LOGNAME=" + as.name, "SHELL=" + as.shell,
			"PATH=/run/wrappers/bin:" + as.home + "/.nix-profile/bin:/etc/profiles/per-user/" + as.name + "/bin:/nix/var/nix/profiles/default/bin:/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin"}, vars...)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: as.uid, Gid: as.gid, Groups: as.groups}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// run runs argv (its first element relative to the root when rel) for
// generation gen, streaming its output, and returns its error with the
// last line it wrote to standard error; with reap, its process group is
// killed once it has exited.
func (p *Profiles) run(ctx context.Context, l place, gen uint64, root nix.Path, argv []string, rel, reap bool, as *runAs, stdout, stderr io.Writer) error {
	tree := p.store.TreePath(root)
	if rel {
		cmdPath := filepath.Join(tree, filepath.FromSlash(argv[0]))
		if !strings.HasPrefix(cmdPath, tree+string(filepath.Separator)) {
			return fmt.Errorf("%q is outside the root", argv[0])
		}
		argv = append([]string{cmdPath}, argv[1:]...)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	cmd := l.command(ctx, tree, gen, argv, as)
	var tail bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, io.MultiWriter(stderr, &tail)
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command exited 0; something it left running holds its
		// output open. That is its success.
		err = nil
	}
	if reap && cmd.Process != nil {
		// A check leaves nothing behind: what it started goes with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil && ctx.Err() == nil {
		if t := strings.TrimSpace(lastLine(tail.String())); t != "" {
			return fmt.Errorf("%v: %s", err, t)
		}
	}
	return err
}
