package profile

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/trove-p2p/trove/manifest"
)

// PathsFile is the file of a home that records where configurations have
// their profile when it is not in the store's profiles directory (trove's
// --profile PATH): {"NAME": "/absolute/path"}. It is read at every use,
// so a path recorded by a command reaches a running agent's followers.
func PathsFile(home string) string { return filepath.Join(home, "profile-paths.json") }

// LoadPaths reads the recorded profile paths (none before the first).
func LoadPaths(home string) (map[string]string, error) {
	b, err := os.ReadFile(PathsFile(home))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	recs := map[string]string{}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("%s: %w", PathsFile(home), err)
	}
	for name, path := range recs {
		if err := manifest.CheckName(name); err != nil {
			return nil, fmt.Errorf("%s: %w", PathsFile(home), err)
		}
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("%s: the profile of %s, %q, is not an absolute path", PathsFile(home), name, path)
		}
	}
	return recs, nil
}

// pathsMu makes Record's read, check and write one step within the
// process that owns the home (one process does: the store's lock).
var pathsMu sync.Mutex

// Record makes path (absolute) the profile of name from now on: it is
// recorded in the home, so later commands and the agent's followers use
// it without being told again. Giving the path name already has changes
// nothing.
//
// A profile moves only while it has no generations. Once name has a
// profile link or generation links where its profile is (recorded, or
// the profiles directory), another path is an error that says how to
// move deliberately: silently switching a new place would leave the old
// profile, which a boot loader, nixos-rebuild --rollback or Nix's
// garbage collector may still use, pointing at a stale generation that no
// follower updates and no trove command shows, and moving generation
// links by hand behind the user's back could break what boots from them.
func (p *Profiles) Record(name, path string) error {
	pathsMu.Lock()
	defer pathsMu.Unlock()
	recs, err := LoadPaths(p.store.Home())
	if err != nil {
		return err
	}
	path, err = p.check(name, path, recs)
	if err != nil {
		return err
	}
	old, had := recs[name]
	switch {
	case path == filepath.Join(p.dir, name):
		if !had {
			return nil
		}
		delete(recs, name) // the default needs no record
	case had && old == path:
		return nil
	default:
		recs[name] = path
	}
	return savePaths(p.store.Home(), recs)
}

// Use makes path the profile of name for this Profiles value only, after
// the checks of Record, and records nothing: for commands that only read
// a profile.
func (p *Profiles) Use(name, path string) error {
	recs, err := LoadPaths(p.store.Home())
	if err != nil {
		return err
	}
	if path, err = p.check(name, path, recs); err != nil {
		return err
	}
	if p.used == nil {
		p.used = map[string]string{}
	}
	p.used[name] = path
	return nil
}

// check says whether path may be name's profile, given the recorded
// paths, and returns it cleaned.
func (p *Profiles) check(name, path string, recs map[string]string) (string, error) {
	if err := manifest.CheckName(name); err != nil {
		return "", err
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("profile %q: want an absolute path", path)
	}
	path = filepath.Clean(path)
	if path == "/" {
		return "", fmt.Errorf("profile %q: want the path of a profile link, such as /nix/var/nix/profiles/system", path)
	}
	if sd := p.store.StoreDir(); path == sd || strings.HasPrefix(path, sd+"/") {
		return "", fmt.Errorf("profile %s: a profile cannot be in the store", path)
	}
	for _, other := range slices.Sorted(maps.Keys(recs)) {
		if other != name && recs[other] == path {
			return "", fmt.Errorf("%s is already the profile of %s; give %s another path", path, other, name)
		}
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return "", fmt.Errorf("profile %s: it exists and is not a profile (a symlink to a generation link)", path)
	}
	cur := place(filepath.Join(p.dir, name))
	if r, ok := recs[name]; ok {
		cur = place(r)
	}
	if string(cur) == path {
		return path, nil
	}
	if occupied, err := cur.occupied(); err != nil {
		return "", err
	} else if occupied {
		return "", fmt.Errorf("the profile of %s is %s, which has generations; trove does not move it to %s (whatever boots from it, rolls it back or keeps its paths would be left behind): "+
			"leave out --profile to keep using it, or to move it, remove that profile and its generations first (rm %s %s-*-link) and give --profile %s again",
			name, cur, path, cur, cur, path)
	}
	return path, nil
}

// occupied reports whether a profile link or any generation link exists
// at l.
func (l place) occupied() (bool, error) {
	if _, err := os.Lstat(string(l)); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	ns, err := l.gens()
	return len(ns) > 0, err
}

func savePaths(home string, recs map[string]string) error {
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp := PathsFile(home) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, PathsFile(home))
}
