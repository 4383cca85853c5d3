package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
	trovesync "github.com/trove-p2p/trove/sync"
)

// Follow is one configuration this machine follows.
type Follow struct {
	Name     string `json:"name"`
	Activate bool   `json:"activate,omitempty"` // switch the profile to each new generation
	Run      bool   `json:"run,omitempty"`      // and run its activation command
	// Timeout bounds each activation command ("10m"); "" is the agent's
	// (config.toml's timeout, or sync.DefaultActivationTimeout).
	Timeout string `json:"timeout,omitempty"`
}

// FollowsPath is the file of followed configurations in a home.
func FollowsPath(home string) string { return filepath.Join(home, "follows.json") }

// LoadFollows reads the followed configurations.
func LoadFollows(home string) ([]Follow, error) {
	b, err := os.ReadFile(FollowsPath(home))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fs []Follow
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, fmt.Errorf("%s: %w", FollowsPath(home), err)
	}
	for _, f := range fs {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("%s: %w", FollowsPath(home), err)
		}
	}
	return fs, nil
}

func (f Follow) check() error {
	if err := manifest.CheckName(f.Name); err != nil {
		return err
	}
	_, err := parseTimeout(f.Timeout)
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
// a profile held back by a manual rollback (sync.Profiles.Resume): the
// newest generation is activated.
func RecordFollow(home string, prof *trovesync.Profiles, f Follow, follow bool) error {
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

// Following. Each followed configuration has a follower: a goroutine that
// brings the machine to the newest generation known here, one step at a
// time (fetch its closure; with --activate, switch the profile and run its
// activation command), and never activates a generation at or below the
// profile's highest (sync.Profiles.Highest), so a manual rollback holds.
//
// Learning of new generations is separate and never waits on a follower:
// the learner asks peers for manifests when an announcement arrives, a peer
// connects, a retry is due, and every minute (the safety net), records what
// verifies in the history, and wakes the followers. An announcement is kept
// (the highest generation announced per configuration) until its manifest
// is known here, retried with backoff, so one that arrives while a sync or
// an activation runs, or whose first fetch fails, is not lost.

// follower is the agent's state of one followed configuration.
type follower struct {
	name string
	wake chan struct{} // capacity 1: apply the newest generation
	stop context.CancelFunc

	mu        sync.Mutex // guards the fields below
	announced uint64     // the highest generation announced
	state     string     // what the follower does now: "" (idle), fetching, activating
	lastErr   string
	lastErrAt time.Time
}

func (f *follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *follower) set(state string) {
	f.mu.Lock()
	f.state = state
	f.mu.Unlock()
}

// fail records what went wrong last ("" clears it) and reports whether
// that is news, so that a refusal repeated at every retry is logged once.
func (f *follower) fail(err string) (changed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed = err != f.lastErr
	f.lastErr, f.lastErrAt = err, time.Now()
	if err == "" {
		f.lastErrAt = time.Time{}
	}
	return changed
}

// learnInterval is how often the learner asks peers anyway: the safety
// net under announcements. Tests shorten it.
var learnInterval = time.Minute

// fetchRetry is how soon a follower tries again after a failed fetch.
const fetchRetry = 10 * time.Second

// startFollowing starts a follower for every followed configuration and
// the learner.
func (a *Agent) startFollowing(ctx context.Context) error {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if err := a.startFollower(ctx, f); err != nil {
			return err
		}
	}
	a.Node.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		a.kick()
	}})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.learn(ctx)
	}()
	return nil
}

// kick asks the learner to look for new generations now.
func (a *Agent) kick() {
	select {
	case a.kicks <- struct{}{}:
	default:
	}
}

// learn is the learner's loop.
func (a *Agent) learn(ctx context.Context) {
	tick := time.NewTicker(learnInterval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	backoff := time.Second
	for {
		if a.learnOnce(ctx) {
			retry.Reset(backoff)
			backoff = min(2*backoff, 30*time.Second)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kicks:
		case <-tick.C:
		case <-retry.C:
		}
	}
}

// learnOnce asks the connected peers for the newest generation of every
// followed configuration and wakes the followers. It reports whether a
// generation announced is still not known here (the caller retries).
func (a *Agent) learnOnce(ctx context.Context) (pending bool) {
	a.reconcileFollowers(ctx)
	a.followMu.Lock()
	fls := slices.Collect(maps.Values(a.followers))
	a.followMu.Unlock()
	for _, fl := range fls {
		if len(a.Node.ConnectedPeers()) > 0 {
			for _, err := range trovesync.Learn(ctx, a.Node, a.History, fl.name, 0) {
				if ctx.Err() != nil {
					return false
				}
				if fl.fail("refused a generation: " + err.Error()) {
					a.log.Warn("refused a generation a peer offered", "config", fl.name, "err", err)
				}
			}
		}
		newest := a.newestKnown(fl.name)
		fl.mu.Lock()
		if fl.announced > newest {
			pending = true
		}
		fl.mu.Unlock()
		fl.poke()
	}
	return pending
}

// newestKnown is the newest generation of name in the history (0: none).
func (a *Agent) newestKnown(name string) uint64 {
	gens, err := a.History.Generations(name)
	if err != nil || len(gens) == 0 {
		return 0
	}
	return gens[len(gens)-1]
}

// startFollower subscribes to f's announcements and starts its follower,
// if not yet running.
func (a *Agent) startFollower(ctx context.Context, f Follow) error {
	a.followMu.Lock()
	_, running := a.followers[f.Name]
	a.followMu.Unlock()
	if running {
		return nil
	}
	if err := a.subscribe(f.Name); err != nil {
		return err
	}
	if len(a.Keys.Publishers(f.Name)) == 0 {
		a.log.Warn("no trusted key may publish this configuration: every generation will be refused", "config", f.Name,
			"fix", "trove trust add KEY --config "+f.Name)
	}
	a.followMu.Lock()
	defer a.followMu.Unlock()
	if _, ok := a.followers[f.Name]; ok {
		return nil
	}
	fctx, stop := context.WithCancel(ctx)
	fl := &follower{name: f.Name, wake: make(chan struct{}, 1), stop: stop}
	a.followers[f.Name] = fl
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case <-fctx.Done():
				return
			case <-fl.wake:
				a.apply(fctx, fl)
			}
		}
	}()
	fl.poke()
	return nil
}

// subscribe joins name's announcements (for following, or to publish).
func (a *Agent) subscribe(name string) error {
	a.followMu.Lock()
	defer a.followMu.Unlock()
	if a.subscribed[name] {
		return nil
	}
	err := a.Node.Subscribe(a.bg, name, func(from peer.ID, ann p2p.Announcement) {
		a.followMu.Lock()
		fl := a.followers[name]
		a.followMu.Unlock()
		if fl == nil {
			return // not followed (any more)
		}
		a.log.Info("new generation announced", "config", name, "generation", ann.Generation, "from", from)
		fl.mu.Lock()
		fl.announced = max(fl.announced, ann.Generation)
		fl.mu.Unlock()
		a.kick()
	})
	if err == nil {
		a.subscribed[name] = true
	}
	return err
}

// follow returns the followed configuration name, if it is followed.
func (a *Agent) follow(name string) (Follow, bool) {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		a.log.Warn("cannot read followed configurations", "err", err)
		return Follow{}, false
	}
	i := slices.IndexFunc(fs, func(f Follow) bool { return f.Name == name })
	if i < 0 {
		return Follow{}, false
	}
	return fs[i], true
}

// activationTimeout is f's, else the agent's.
func (a *Agent) activationTimeout(f Follow) time.Duration {
	if d, err := parseTimeout(f.Timeout); err == nil && d > 0 {
		return d
	}
	if a.cfg.ActivationTimeout > 0 {
		return a.cfg.ActivationTimeout
	}
	return trovesync.DefaultActivationTimeout
}

// apply brings fl's configuration to the newest generation known here:
// fetch its closure, and if followed with --activate and newer than any
// generation the profile had, activate it. Failures are logged and kept
// for status; the next wake tries again.
func (a *Agent) apply(ctx context.Context, fl *follower) {
	defer fl.set("")
	f, ok := a.follow(fl.name)
	if !ok {
		return
	}
	m, _, err := a.History.Get(f.Name, 0)
	if err != nil {
		if !errors.Is(err, manifest.ErrUnknown) {
			fl.fail(err.Error())
		}
		return
	}
	prof := trovesync.OpenProfiles(a.Store)
	highest, err := prof.Highest(f.Name)
	if err != nil {
		fl.fail(err.Error())
		return
	}
	if f.Activate && m.Generation <= highest {
		return // up to date, or held back by a manual switch
	}
	if ok, _ := a.Store.IsValid(m.Root); !ok {
		if len(a.Node.ConnectedPeers()) == 0 {
			return // a peer connecting wakes us again
		}
		fl.set(fmt.Sprintf("fetching generation %d", m.Generation))
		end := a.BeginTransfer()
		opts := trovesync.Options{Keys: a.Keys, Logger: a.log}
		if fp := a.cfg.FollowProgress; fp != nil {
			opts.Progress = func(p trovesync.Progress) { fp(f.Name, p) }
		}
		rep, err := trovesync.New(a.Store, a.Node, opts).SyncManifest(ctx, m)
		end()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("fetching a generation failed; will retry", "config", f.Name, "generation", m.Generation, "err", err)
				fl.fail(fmt.Sprintf("fetching generation %d: %v", m.Generation, err))
				time.AfterFunc(fetchRetry, fl.poke)
			}
			return
		}
		a.log.Info("synced configuration", "config", f.Name, "generation", m.Generation,
			"paths", rep.PathsFetched, "bytes", rep.BytesFetched, "reused", rep.BytesReused)
		if !f.Activate {
			fl.fail("")
		}
	}
	if !f.Activate {
		return
	}
	fl.set(fmt.Sprintf("activating generation %d", m.Generation))
	timeout := a.activationTimeout(f)
	err = trovesync.Activate(ctx, prof, m, trovesync.ActivateOptions{
		Run: f.Run, Timeout: timeout, Wait: timeout + 15*time.Second, Stdout: io.Discard, Stderr: logWriter{a},
		OnWait: func(holder string) {
			a.log.Info("waiting for another activation to finish", "config", f.Name, "holder", holder)
		},
	})
	var ae *trovesync.ActivationError
	switch {
	case errors.As(err, &ae):
		a.log.Warn("activation failed", "config", f.Name, "generation", m.Generation, "err", err)
		fl.fail(err.Error())
	case err != nil:
		if ctx.Err() == nil {
			a.log.Warn("activating a generation failed; will retry", "config", f.Name, "generation", m.Generation, "err", err)
			fl.fail(fmt.Sprintf("activating generation %d: %v", m.Generation, err))
		}
	default:
		a.log.Info("activated configuration", "config", f.Name, "generation", m.Generation)
		fl.fail("")
	}
}

// reconcileFollowers runs a follower for each configuration in
// follows.json and stops the others: the file is the truth, and another
// process may have changed it.
func (a *Agent) reconcileFollowers(ctx context.Context) {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		a.log.Warn("cannot read followed configurations", "err", err)
		return
	}
	for _, f := range fs {
		if err := a.startFollower(ctx, f); err != nil {
			a.log.Warn("cannot follow", "config", f.Name, "err", err)
		}
	}
	a.followMu.Lock()
	defer a.followMu.Unlock()
	for name, fl := range a.followers {
		if !slices.ContainsFunc(fs, func(f Follow) bool { return f.Name == name }) {
			fl.stop()
			delete(a.followers, name)
		}
	}
}

// wakeFollower makes name's follower look at the newest generation known
// here now (a bundle brought one).
func (a *Agent) wakeFollower(name string) {
	a.reconcileFollowers(a.bg)
	a.followMu.Lock()
	fl := a.followers[name]
	a.followMu.Unlock()
	if fl != nil {
		fl.poke()
	}
}

// SetFollow records (or with follow false, drops) a followed configuration
// and starts (or stops) following it at once.
func (a *Agent) SetFollow(ctx context.Context, f Follow, follow bool) error {
	a.followMu.Lock()
	err := RecordFollow(a.Home, trovesync.OpenProfiles(a.Store), f, follow)
	fl := a.followers[f.Name]
	if err == nil && !follow && fl != nil {
		fl.stop()
		delete(a.followers, f.Name)
	}
	a.followMu.Unlock()
	if err != nil || !follow {
		return err
	}
	if err := a.startFollower(a.bg, f); err != nil {
		return err
	}
	if fl != nil {
		fl.poke() // --activate again resumes a held profile
	}
	a.kick()
	return nil
}

// FollowStatus is the state of one followed configuration (trove status).
type FollowStatus struct {
	Name     string `json:"name"`
	Activate bool   `json:"activate"`
	Run      bool   `json:"run"`
	// Current is the profile's generation, Highest the highest it has
	// had, Newest the newest generation known here, Announced the newest
	// announced (above Newest while its manifest is being fetched).
	Current   uint64 `json:"current"`
	Highest   uint64 `json:"highest"`
	Newest    uint64 `json:"newestKnown"`
	Announced uint64 `json:"announced,omitempty"`
	// HeldBack: the profile was switched back by hand; the follower
	// activates only generations above Highest.
	HeldBack    bool      `json:"heldBack"`
	State       string    `json:"state,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// Hint says what to run, when something needs the user.
	Hint string `json:"hint,omitempty"`
}

// FollowStatuses reports on every followed configuration.
func (a *Agent) FollowStatuses() ([]FollowStatus, error) {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		return nil, err
	}
	prof := trovesync.OpenProfiles(a.Store)
	out := []FollowStatus{}
	for _, f := range fs {
		st := FollowStatus{Name: f.Name, Activate: f.Activate, Run: f.Run, Newest: a.newestKnown(f.Name)}
		if st.HeldBack, st.Current, st.Highest, err = prof.HeldBack(f.Name); err != nil {
			return nil, err
		}
		a.followMu.Lock()
		fl := a.followers[f.Name]
		a.followMu.Unlock()
		if fl != nil {
			fl.mu.Lock()
			if fl.announced > st.Newest {
				st.Announced = fl.announced
			}
			st.State, st.LastError, st.LastErrorAt = fl.state, fl.lastErr, fl.lastErrAt
			fl.mu.Unlock()
		}
		switch {
		case len(a.Keys.Publishers(f.Name)) == 0:
			st.Hint = fmt.Sprintf("no trusted key may publish %s: run `trove trust add KEY --config %s` with the publisher's key", f.Name, f.Name)
		case st.HeldBack && f.Activate:
			st.Hint = fmt.Sprintf("held back at generation %d by a manual switch (it had %d): run `trove follow %s --activate` to resume, or `trove activate %s` for the newest", st.Current, st.Highest, f.Name, f.Name)
		}
		out = append(out, st)
	}
	return out, nil
}

// Publish makes and announces a new generation of name.
func (a *Agent) Publish(ctx context.Context, key manifest.SecretKey, name string, root store.Path, activate string) (*manifest.Manifest, error) {
	m, _, err := trovesync.Publish(a.Store, a.History, key, name, root, activate)
	if err != nil {
		return nil, err
	}
	id, _ := m.ID()
	if err := a.Node.Announce(ctx, p2p.Announcement{Name: name, Generation: m.Generation, ID: id[:]}); err != nil {
		a.log.Warn("announcing the new generation failed; followers will still find it when they ask", "err", err)
	}
	if err := a.subscribe(name); err != nil {
		a.log.Debug("subscribing to own configuration", "err", err)
	}
	// On the DHT go the configuration's name and its closure's root, never
	// the paths or chunks inside it.
	for _, key := range []cid.Cid{p2p.ConfigKey(name), p2p.PathKey(root.Hash)} {
		if err := a.Node.Provide(ctx, key); err != nil && !errors.Is(err, p2p.ErrNoDHT) {
			a.log.Warn("announcing on the DHT failed", "err", err)
		}
	}
	return m, nil
}

type logWriter struct{ a *Agent }

func (w logWriter) Write(p []byte) (int, error) {
	w.a.log.Info("activation", "output", string(p))
	return len(p), nil
}
