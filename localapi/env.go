package localapi

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/trove-p2p/trove/profile"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
)

// Env is what operations run on: a home, its store, trusted keys and
// manifest history, and the running agent when there is one (its node,
// trust group and followers). A short-lived Env (Open) opens what an
// operation asks for on first use and closes it in Close; the agent's
// (AgentEnv) shares the agent's, which lives as long as the agent.
type Env struct {
	Home     string
	StoreDir string
	Log      *slog.Logger

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

// AgentEnv is the running agent's environment, for requests asking for
// store dir storeDir.
func AgentEnv(ag *agent.Agent, storeDir string, log *slog.Logger) *Env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
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
		return e.store, nil
	}
	e.Log.Debug("opening store", "home", e.Home, "storeDir", e.StoreDir)
	s, err := store.Open(e.Home, store.Options{StoreDir: e.StoreDir, Logger: e.Log})
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

// Agent is the running agent, or nil in a short-lived environment.
func (e *Env) Agent() *agent.Agent { return e.agent }
