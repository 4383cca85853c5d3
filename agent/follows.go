package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/profile"
)

// Follow is one configuration this machine follows.
type Follow struct {
	Name     string `json:"name"`
	Activate bool   `json:"activate,omitempty"` // switch the profile to each new generation
	Run      bool   `json:"run,omitempty"`      // and run its activation command
	// Timeout bounds each activation command ("10m"); "" is the agent's
	// (config.toml's timeout, or profile.DefaultActivationTimeout).
	Timeout string `json:"timeout,omitempty"`
	// Check is this machine's own health check, a command line run with
	// /bin/sh -c after each activation, beside the generation's own.
	Check string `json:"check,omitempty"`
	// CheckTimeout is the deadline ("2m"), from the switch, for the
	// activation command and every check; "" is profile.DefaultCheckTimeout.
	CheckTimeout string `json:"checkTimeout,omitempty"`
	// User runs the activation command and checks as this user, with a
	// clean environment; "" is the profile's owner (profile/runas.go).
	User string `json:"user,omitempty"`
	// When is when a fetched generation is switched to: "" or "now", "boot"
	// (at the next boot), or a daily window "HH:MM-HH:MM" (local time).
	When string `json:"when,omitempty"`
}

// FollowsPath is the file of followed configurations in a home.
func FollowsPath(home string) string { return filepath.Join(home, "follows.json") }

// LoadFollows reads the followed configurations.
func LoadFollows(home string) ([]Follow, error) {
	return loadFile(FollowsPath(home), nil, parseFollows)
}

func parseFollows(b []byte) ([]Follow, error) {
	var fs []Follow
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, err
	}
	for _, f := range fs {
		if err := f.check(); err != nil {
			return nil, err
		}
	}
	return fs, nil
}

// Command is the command line that follows as f does.
func (f Follow) Command() string {
	args := []string{"trove", "follow", f.Name}
	if f.Activate {
		args = append(args, "--activate")
	}
	if f.Run {
		args = append(args, "--run")
	}
	if f.Timeout != "" {
		args = append(args, "--timeout", f.Timeout)
	}
	if f.Check != "" {
		args = append(args, "--check", strconv.Quote(f.Check))
	}
	if f.CheckTimeout != "" {
		args = append(args, "--check-timeout", f.CheckTimeout)
	}
	if f.User != "" {
		args = append(args, "--user", f.User)
	}
	if f.When != "" {
		args = append(args, "--when", f.When)
	}
	return strings.Join(args, " ")
}

func (f Follow) check() error {
	if err := manifest.CheckName(f.Name); err != nil {
		return err
	}
	if _, err := parseTimeout(f.Timeout); err != nil {
		return err
	}
	if strings.ContainsRune(f.Check, 0) || len(f.Check) > 4096 {
		return fmt.Errorf("check command: at most 4096 bytes, no NUL")
	}
	if _, err := parseTimeout(f.CheckTimeout); err != nil {
		return err
	}
	if len(f.User) > 64 || strings.ContainsAny(f.User, "\x00/: ") {
		return fmt.Errorf("user %q: not a user name", f.User)
	}
	_, err := ParseWhen(f.When)
	return err
}

// SaveFollows writes the followed configurations atomically.
func SaveFollows(home string, fs []Follow) error {
	b, err := json.MarshalIndent(fs, "", "  ")
	if err != nil {
		return err
	}
	tmp := FollowsPath(home) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, FollowsPath(home))
}

// RecordFollow adds f to (or with follow false, drops f.Name from) the
// followed configurations of home. Following with --activate again resumes
// a profile held back by a manual rollback (profile.Profiles.Resume): the
// newest generation is activated.
func RecordFollow(home string, prof *profile.Profiles, f Follow, follow bool) error {
	if err := f.check(); err != nil {
		return err
	}
	fs, err := LoadFollows(home)
	if err != nil {
		return err
	}
	fs = slices.DeleteFunc(fs, func(o Follow) bool { return o.Name == f.Name })
	if follow {
		fs = append(fs, f)
	}
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if err := SaveFollows(home, fs); err != nil {
		return err
	}
	if follow && f.Activate {
		return prof.Resume(f.Name)
	}
	return nil
}

// historyBytes serves the manifest protocol from the history.
type historyBytes struct{ h *manifest.History }

func (s historyBytes) ManifestBytes(name string, gen uint64) ([]byte, error) {
	_, b, err := s.h.Get(name, gen)
	return b, err
}
