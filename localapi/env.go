package localapi

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/trove-p2p/trove/profile"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// Env is what operations run on: a home, its store, trusted keys and
// manifest history, and the running agent when there is one (its node,
// trust group and followers). A short-lived Env (Open) opens what an
// operation asks for on first use and closes it in Close; the agent's
// (agentEnv) shares the agent's, which lives as long as the agent.
type Env struct {
	Home     string
	StoreDir string
	// Kind is the store the caller asked for (--store, --nix-store); the
	// zero value is the home's own.
	Kind store.Kind
	Log  *slog.Logger

	agent   *agent.Agent // nil in a short-lived environment
	store   *store.Store // the agent's, or opened by Store
	owned   bool         // store was opened here and is closed by Close
	keys    *manifest.Keyring
	history *manifest.History
}

// Open makes a short-lived environment for home; nothing is opened yet.
func Open(home, storeDir string, log *slog.Logger) *Env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Env{Home: home, StoreDir: storeDir, Log: log}
}

// agentEnv is the running agent's environment, for requests asking for
// store dir storeDir.
func agentEnv(ag *agent.Agent, storeDir string, log *slog.Logger) *Env {
	return &Env{Home: ag.Home, StoreDir: storeDir, Log: log, agent: ag, store: ag.Store, keys: ag.Keys, history: ag.History}
}

// Close closes what a short-lived environment opened.
func (e *Env) Close() error {
	if e.owned && e.store != nil {
		s := e.store
		e.store, e.owned = nil, false
		if err := s.Close(); err != nil {
			return fmt.Errorf("closing the store: %w", err)
		}
	}
	return nil
}

// Store is the home's store, opened (and created if need be) on first use
// in a short-lived environment. A store held by another process is a
// *store.LockedError.
func (e *Env) Store() (*store.Store, error) {
	if e.store != nil {
		if e.store.StoreDir() != e.StoreDir {
			return nil, fmt.Errorf("the running agent's store uses store dir %s, not %s", e.store.StoreDir(), e.StoreDir)
		}
		if b := e.Kind.Backend; b != "" && b != e.store.Backend() {
			return nil, fmt.Errorf("the running agent works on the %s store, not the %s store: leave out --store, or stop the agent", e.store.Backend(), b)
		}
		return e.store, nil
	}
	e.Log.Debug("opening store", "home", e.Home, "storeDir", e.StoreDir)
	s, err := store.Open(e.Home, store.Options{StoreDir: e.StoreDir, Logger: e.Log, Kind: e.Kind})
	if err != nil {
		return nil, err
	}
	e.store, e.owned = s, true
	return s, nil
}

// Profiles are the store's profiles.
func (e *Env) Profiles() (*profile.Profiles, error) {
	s, err := e.Store()
	if err != nil {
		return nil, err
	}
	return profile.OpenProfiles(s), nil
}

// Keys are the trusted public keys ($TROVE_HOME/trusted-keys).
func (e *Env) Keys() (*manifest.Keyring, error) {
	if e.keys != nil {
		return e.keys, nil
	}
	if err := os.MkdirAll(e.Home, 0o755); err != nil {
		return nil, err
	}
	kr, err := manifest.LoadKeyring(manifest.TrustedKeysPath(e.Home))
	if err != nil {
		return nil, err
	}
	e.keys = kr
	return kr, nil
}

// History is the manifests known here.
func (e *Env) History() (*manifest.History, error) {
	if e.history != nil {
		return e.history, nil
	}
	kr, err := e.Keys()
	if err != nil {
		return nil, err
	}
	e.history = manifest.OpenHistory(e.Home, kr)
	return e.history, nil
}

// storePaths parses store path arguments (a malformed one is a usage
// error, found before anything is opened) and opens the store.
func (e *Env) storePaths(args []string) (*store.Store, []nix.Path, error) {
	paths := make([]nix.Path, 0, len(args))
	for _, a := range args {
		p, err := nix.ParsePathLoose(e.StoreDir, a)
		if err != nil {
			return nil, nil, &UsageError{err}
		}
		paths = append(paths, p)
	}
	s, err := e.Store()
	return s, paths, err
}

// trusted opens the store, the trusted keys and the manifest history:
// what believing outside data needs.
func (e *Env) trusted() (*store.Store, *manifest.Keyring, *manifest.History, error) {
	h, err := e.History()
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := e.Store()
	return s, e.keys, h, err
}

// profilesAt opens the profiles with name's profile at path (absolute)
// when it is given (--profile): recorded for later commands when record is
// set (a command that switches the profile), else for this request only.
func (e *Env) profilesAt(name, path string, record bool) (*profile.Profiles, error) {
	if err := manifest.CheckName(name); err != nil {
		return nil, &UsageError{err}
	}
	prof, err := e.Profiles()
	if err != nil || path == "" {
		return prof, err
	}
	if record {
		err = prof.Record(name, path)
	} else {
		err = prof.Use(name, path)
	}
	return prof, err
}

// generations checks the configuration name, opens the profiles (with
// name's at path, if given; see profilesAt) and lists the generations of
// profile name.
func (e *Env) generations(name, path string, record bool) (*profile.Profiles, []profile.Generation, error) {
	prof, err := e.profilesAt(name, path, record)
	if err != nil {
		return nil, nil, err
	}
	gens, err := prof.Generations(name)
	return prof, gens, err
}

// each runs fn on each item in order, listing what it returns; on an
// error, what it returned before.
func each[T any](items []T, fn func(T) (string, error)) ([]string, error) {
	var out []string
	for _, it := range items {
		s, err := fn(it)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}
