package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/profile"
)

// Following. Each followed configuration has a follower: a goroutine that
// brings the machine to the newest generation known here, one step at a
// time (fetch its closure; with --activate, switch the profile and run its
// activation command). It activates only a generation above the profile's
// highest (profile.Profiles.Highest, checked under the profile's lock), so a
// manual rollback holds.
//
// Learning of new generations is separate and never waits on a follower:
// the learner asks peers for manifests when an announcement arrives, a peer
// connects, a retry is due, and every minute (the safety net), and records
// what verifies in the history; every new manifest the history records
// wakes its follower at once (History.OnNew), whoever brought it. An
// announcement of a generation not known here is kept and retried with
// backoff until the manifest arrives (or announceExpiry passes), so one
// that arrives while a sync or an activation runs, or whose first fetch
// fails, is not lost.

// Tunables; tests shorten learnInterval.
var (
	// learnInterval is how often the learner asks peers anyway.
	learnInterval = time.Minute
	// fetchRetry is how soon a follower tries again after a failed fetch.
	fetchRetry = 10 * time.Second
	// askTimeout bounds how long a learning round waits for one peer's
	// manifest: a silent peer must not hold up the others' news.
	askTimeout = 10 * time.Second
	// minLearnGap is the least time between the starts of two rounds.
	minLearnGap = 500 * time.Millisecond
	// announceExpiry is how long an announced generation that never
	// arrives is retried (and shown in status) before it is dropped.
	announceExpiry = 2 * time.Minute
)

// follower is the agent's state of one followed configuration.
type follower struct {
	name string
	wake chan struct{} // capacity 1: apply the newest generation
	stop context.CancelFunc

	mu          sync.Mutex // guards the fields below
	announced   uint64     // the highest generation announced and not yet known
	announcedAt time.Time
	state       string      // what the follower does now: "" (idle), fetching, activating
	waiting     string      // why a fetched generation waits to be switched to (--when)
	window      *time.Timer // wakes the follower when its window opens
	lastErr     string
	lastErrAt   time.Time

	applied atomic.Uint64 // rounds of apply finished; tests wait on it
}

func (f *follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *follower) setPending(why string) {
	f.mu.Lock()
	f.waiting = why
	f.mu.Unlock()
}

func (f *follower) set(state string) {
	f.mu.Lock()
	f.state = state
	f.mu.Unlock()
}

// fail records what went wrong last and reports whether that is news, so
// that a refusal repeated at every retry is logged once.
func (f *follower) fail(err error) (changed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed = err.Error() != f.lastErr
	f.lastErr, f.lastErrAt = err.Error(), time.Now()
	return changed
}

// succeed clears the last error: a generation went through.
func (f *follower) succeed() {
	f.mu.Lock()
	f.lastErr, f.lastErrAt = "", time.Time{}
	f.mu.Unlock()
}

// announce notes that gen was announced; known is the newest known here.
// It reports whether the announcement is news.
func (f *follower) announce(gen, known uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen <= known || gen <= f.announced {
		return false
	}
	f.announced, f.announcedAt = gen, time.Now()
	return true
}

// pending reports whether an announced generation is still awaited (known
// is the newest known here), dropping one that is known or expired.
func (f *follower) pending(known uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.announced <= known || time.Since(f.announcedAt) > announceExpiry {
		f.announced = 0
	}
	return f.announced > 0
}

// startFollowing starts a follower for every followed configuration and
// the learner.
func (a *Agent) startFollowing(ctx context.Context) error {
	a.History.OnNew(func(m *manifest.Manifest) { a.wakeFollower(m.Name) })
	fs, err := LoadFollows(a.Home)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if err := a.startFollower(ctx, f.Name); err != nil {
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
		start := time.Now()
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
		// Announcements and connections come in bursts, and a peer may
		// send many: at most one round per minLearnGap.
		select {
		case <-ctx.Done():
			return
		case <-time.After(minLearnGap - time.Since(start)):
		}
	}
}

// learnOnce asks the connected peers for the newest generation of every
// followed configuration, all at once (bounded), and wakes the followers. It reports
// whether a generation announced is still not known here (the caller
// retries).
func (a *Agent) learnOnce(ctx context.Context) (pending bool) {
	a.reconcileFollowers(ctx)
	a.followMu.Lock()
	fls := slices.Collect(maps.Values(a.followers))
	a.followMu.Unlock()
	var mu sync.Mutex
	fetch.AskAll(ctx, fls, 0, func(ctx context.Context, fl *follower) error {
		if len(a.Node.ConnectedPeers()) > 0 {
			actx, cancel := context.WithTimeout(ctx, askTimeout)
			refused := fetch.Learn(actx, a.Node, a.History, fl.name, 0)
			cancel()
			for _, err := range refused {
				if ctx.Err() == nil && fl.fail(fmt.Errorf("refused a generation: %w", err)) {
					a.log.Warn("refused a generation a peer offered", "config", fl.name, "err", err)
				}
			}
		}
		if fl.pending(a.newestKnown(fl.name)) {
			mu.Lock()
			pending = true
			mu.Unlock()
		}
		fl.poke()
		return nil
	})
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

// startFollower subscribes to name's announcements and starts its
// follower, unless one runs; the caller knows that name is followed. (If
// it was unfollowed meanwhile, the follower does nothing, since apply reads
// follows.json, and the next reconcileFollowers stops it.)
func (a *Agent) startFollower(ctx context.Context, name string) error {
	if err := a.subscribe(name); err != nil {
		return err
	}
	a.followMu.Lock()
	defer a.followMu.Unlock()
	if _, ok := a.followers[name]; ok {
		return nil
	}
	if len(a.Keys.Publishers(name)) == 0 {
		a.log.Warn("no trusted key may publish this configuration: every generation will be refused", "config", name,
			"fix", "trove trust add KEY --config "+name)
	}
	fctx, stop := context.WithCancel(ctx)
	fl := &follower{name: name, wake: make(chan struct{}, 1), stop: stop}
	a.followers[name] = fl
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
		if fl == nil || !fl.announce(ann.Generation, a.newestKnown(name)) {
			return // not followed, or nothing new: not worth a round
		}
		a.log.Info("new generation announced", "config", name, "generation", ann.Generation, "from", from)
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
	if d, _ := parseTimeout(f.Timeout); d > 0 {
		return d
	}
	if a.cfg.ActivationTimeout > 0 {
		return a.cfg.ActivationTimeout
	}
	return profile.DefaultActivationTimeout
}

// apply brings fl's configuration to the newest generation known here:
// fetch its closure, and if followed with --activate, activate it unless
// the profile has had it or a newer one. Failures are logged and kept for
// status; a failed fetch is retried after fetchRetry, anything else at the
// next wake.
func (a *Agent) apply(ctx context.Context, fl *follower) {
	defer fl.applied.Add(1)
	if ctx.Err() != nil {
		return // a wake that raced the stop
	}
	defer fl.set("")
	f, ok := a.follow(fl.name)
	if !ok {
		return
	}
	m, _, err := a.History.Get(f.Name, 0)
	if err != nil {
		if !errors.Is(err, manifest.ErrUnknown) {
			fl.fail(err)
		}
		return
	}
	prof := profile.OpenProfiles(a.Store)
	if f.Activate {
		// A trial cut off by a crash or a stop is decided first: the
		// generation was not proven healthy, so it is undone.
		if err := prof.Recover(a.bg, f.Name, a.activateOptions(fl, f, nil)); err != nil {
			a.reportActivation(fl, f.Name, 0, err)
			if !errors.As(err, new(*profile.RolledBackError)) {
				return
			}
		}
		// A switch made for the next boot is activated once it came.
		if gen, err := prof.RunAtBoot(a.bg, f.Name, a.activateOptions(fl, f, nil)); gen != 0 || err != nil {
			a.log.Info("activated the generation switched to for this boot", "config", f.Name, "generation", gen, "err", err)
			a.reportActivation(fl, f.Name, gen, err)
		}
		// Checked again under the profile's lock (ActivateOptions.Following).
		if highest, err := prof.Highest(f.Name); err != nil || m.Generation <= highest {
			return // up to date, or held back by a manual switch
		}
	}
	// Nix's collector must not take what the sync delivers (or finds
	// valid) before the profile roots it, however long the sync takes.
	release := a.Store.Hold()
	defer release()
	if ok, _ := a.Store.IsValid(m.Root); !ok {
		if len(a.Node.ConnectedPeers()) == 0 {
			return // a peer connecting wakes us again
		}
		fl.set(fmt.Sprintf("fetching generation %d", m.Generation))
		end := a.BeginTransfer()
		opts := fetch.Options{Keys: a.Keys, Logger: a.log}
		if fp := a.cfg.FollowProgress; fp != nil {
			opts.Progress = func(p fetch.Progress) { fp(f.Name, p) }
		}
		rep, err := fetch.New(a.Store, a.Node, opts).FetchManifest(ctx, m)
		end()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("fetching a generation failed; will retry", "config", f.Name, "generation", m.Generation, "err", err)
				fl.fail(fmt.Errorf("fetching generation %d: %w", m.Generation, err))
				time.AfterFunc(fetchRetry, fl.poke)
			}
			return
		}
		a.log.Info("synced configuration", "config", f.Name, "generation", m.Generation,
			"paths", rep.PathsFetched, "bytes", rep.BytesFetched, "reused", rep.BytesReused)
		if !f.Activate {
			fl.succeed()
		}
	}
	if !f.Activate {
		return
	}
	when, _ := ParseWhen(f.When)
	if open, wait := when.open(time.Now()); !open {
		fl.setPending(fmt.Sprintf("generation %d waits for the window %s (opens in %s)", m.Generation, when, wait.Round(time.Minute)))
		fl.mu.Lock()
		if fl.window != nil {
			fl.window.Stop()
		}
		fl.window = time.AfterFunc(wait+time.Second, fl.poke)
		fl.mu.Unlock()
		return
	}
	fl.setPending("")
	fl.set(fmt.Sprintf("activating generation %d", m.Generation))
	// The agent's context, not the follower's: an unfollow does not cut a
	// running activation command short; stopping the agent does.
	err = profile.Activate(a.bg, prof, m, a.activateOptions(fl, f, m))
	a.reportActivation(fl, f.Name, m.Generation, err)
}

// activateOptions are how the follower of f activates m (nil: finishes a
// rollback). With --run and a health check (the generation's, published
// with it, or the follower's own), an activation is a trial
// (profile/checked.go): the activation command, the checks, and reaching
// a member of the trust group afterwards (a generation that cuts the
// machine off undoes itself) must all pass by the check deadline, or the
// profile rolls back. Without checks, as before: a failed command leaves
// the generation selected and says how to roll back.
func (a *Agent) activateOptions(fl *follower, f Follow, m *manifest.Manifest) profile.ActivateOptions {
	timeout := a.activationTimeout(f)
	o := profile.ActivateOptions{
		Run: f.Run, Timeout: timeout, Wait: timeout + 15*time.Second, Following: true,
		Stdout: io.Discard, Stderr: logWriter{a},
		OnWait: func(holder string) {
			what := "to finish a rollback"
			if m != nil {
				what = fmt.Sprintf("to activate generation %d", m.Generation)
			}
			fl.set(fmt.Sprintf("waiting %s: another activation holds the profile (%s)", what, holder))
			a.log.Info("waiting for another activation to finish", "config", f.Name, "holder", holder)
		},
	}
	o.CheckTimeout, _ = parseTimeout(f.CheckTimeout)
	o.User = f.User
	if w, _ := ParseWhen(f.When); w.Boot {
		o.AtBoot = true
		return o // checked when the command runs after the boot: not yet
	}
	if !f.Run {
		return o
	}
	o.ActivateOf = func(gen uint64) string {
		if pm, _, err := a.History.Get(f.Name, gen); err == nil {
			return pm.Activate
		}
		return ""
	}
	if m != nil && m.Check != "" {
		o.Checks = append(o.Checks, profile.Check{Rel: m.Check})
	}
	if f.Check != "" {
		o.Checks = append(o.Checks, profile.Check{Shell: f.Check})
	}
	if len(o.Checks) == 0 && m != nil {
		return o // unchecked: a failed command leaves the generation selected
	}
	o.Healthy = func(ctx context.Context) error {
		if m != nil {
			fl.set(fmt.Sprintf("checking generation %d", m.Generation))
		}
		return a.Node.ReachMember(ctx)
	}
	return o
}

// reportActivation logs and keeps for status what activating gen (0: a
// rollback left by a trial) came to.
func (a *Agent) reportActivation(fl *follower, name string, gen uint64, err error) {
	var ae *profile.ActivationError
	var rb *profile.RolledBackError
	switch {
	case errors.Is(err, profile.ErrNotNewer):
		a.log.Info("not activating: the profile was switched by hand meanwhile", "config", name, "generation", gen)
	case errors.Is(err, profile.ErrFailedHere):
		a.log.Info("not activating a generation that failed here before", "config", name, "generation", gen)
	case errors.As(err, &rb):
		a.log.Warn("generation failed its trial; rolled back", "config", name, "generation", rb.Gen, "back to", rb.Previous, "err", err)
		fl.fail(err)
	case errors.As(err, &ae):
		a.log.Warn("activation failed", "config", name, "generation", gen, "err", err)
		fl.fail(err)
	case err != nil:
		if a.bg.Err() == nil {
			a.log.Warn("activating a generation failed; will retry", "config", name, "generation", gen, "err", err)
			fl.fail(fmt.Errorf("activating generation %d: %w", gen, err))
		}
	default:
		a.log.Info("activated configuration", "config", name, "generation", gen)
		fl.succeed()
	}
}

// reconcileFollowers runs a follower for each configuration in
// follows.json and stops the others: the file is the truth, and another
// process may have changed it.
func (a *Agent) reconcileFollowers(ctx context.Context) {
	a.followMu.Lock()
	fs, err := LoadFollows(a.Home)
	if err == nil {
		for name, fl := range a.followers {
			if !slices.ContainsFunc(fs, func(f Follow) bool { return f.Name == name }) {
				fl.stop()
				delete(a.followers, name)
			}
		}
	}
	a.followMu.Unlock()
	if err != nil {
		a.log.Warn("cannot read followed configurations", "err", err)
		return
	}
	for _, f := range fs {
		if err := a.startFollower(ctx, f.Name); err != nil {
			a.log.Warn("cannot follow", "config", f.Name, "err", err)
		}
	}
}

// wakeFollower makes name's follower look at the newest generation known
// here now, starting it if follows.json gained name behind the agent's back.
func (a *Agent) wakeFollower(name string) {
	a.followMu.Lock()
	fl := a.followers[name]
	a.followMu.Unlock()
	if fl == nil {
		if _, ok := a.follow(name); ok {
			a.startFollower(a.bg, name) // and pokes it
		}
		return
	}
	fl.poke()
}

// SetFollow records (or with follow false, drops) a followed configuration
// and starts (or stops) following it at once. Following with --activate
// again resumes a profile held back by a manual switch.
func (a *Agent) SetFollow(ctx context.Context, f Follow, follow bool) error {
	a.followMu.Lock()
	err := RecordFollow(a.Home, profile.OpenProfiles(a.Store), f, follow)
	fl := a.followers[f.Name]
	if err == nil && !follow && fl != nil {
		fl.stop()
		delete(a.followers, f.Name)
	}
	a.followMu.Unlock()
	if err != nil || !follow {
		return err
	}
	if err := a.startFollower(a.bg, f.Name); err != nil {
		return err
	}
	a.wakeFollower(f.Name)
	a.kick()
	return nil
}

// FollowStatus is the state of one followed configuration (trove status).
type FollowStatus struct {
	Name     string `json:"name"`
	Activate bool   `json:"activate"`
	Run      bool   `json:"run"`
	Timeout  string `json:"timeout,omitempty"`
	// Profile is where the configuration's profile link is.
	Profile string `json:"profile"`
	// Current is the profile's generation, Highest the highest it has
	// had, Newest the newest generation known here, Announced a newer one
	// announced whose manifest is being fetched.
	Current   uint64 `json:"current"`
	Highest   uint64 `json:"highest"`
	Newest    uint64 `json:"newestKnown"`
	Announced uint64 `json:"announced,omitempty"`
	// HeldBack: the profile is on an older generation than it has had
	// (switched back by hand, or a failed trial rolled back); the
	// follower activates only generations above Highest.
	HeldBack bool `json:"heldBack"`
	// LastActivation is the outcome of the profile's last activation.
	LastActivation *profile.ActivationRecord `json:"lastActivation,omitempty"`
	State          string                    `json:"state,omitempty"`
	LastError      string                    `json:"lastError,omitempty"`
	LastErrorAt    time.Time                 `json:"lastErrorAt,omitzero"`
	// Hint says what to run, when something needs the user.
	Hint string `json:"hint,omitempty"`
	// Phase is where the configuration stands: one of the Phase
	// constants (DESIGN.md, "Following, checked").
	Phase string `json:"phase"`
	// Failed are the generations that failed on this machine (checked
	// activations rolled back), oldest first.
	Failed []profile.Failure `json:"failed,omitempty"`
	// Pending says when a fetched generation will be switched to (--when).
	Pending string `json:"pending,omitempty"`
}

// The phases of a followed configuration.
const (
	PhaseFetching   = "fetching"    // the newest generation's closure is being fetched
	PhaseFetched    = "fetched"     // it is here (following without --activate)
	PhasePending    = "pending"     // it is here, not activated yet
	PhaseActivating = "activating"  // its activation command runs
	PhaseChecking   = "checking"    // its health checks run (on trial)
	PhaseActive     = "active"      // the newest generation is active
	PhaseFailed     = "failed"      // the current generation's activation failed (unchecked: it stays)
	PhaseRolledBack = "rolled back" // a newer generation failed its trial and was undone
	PhaseHeldBack   = "held back"   // switched back by hand; follows only newer generations
)

// phase says where st stands.
func phase(st FollowStatus, activate bool, state string) string {
	la := st.LastActivation
	switch {
	case strings.HasPrefix(state, "fetching"):
		return PhaseFetching
	case la != nil && la.Result == profile.ActivationRunning:
		return PhaseActivating
	case la != nil && la.Result == profile.ActivationChecking:
		return PhaseChecking
	case st.Pending != "":
		return PhasePending
	case !activate:
		if st.Newest > 0 {
			return PhaseFetched
		}
		return PhasePending
	case la != nil && la.Result == profile.ActivationRolledBack && st.Current < st.Highest:
		return PhaseRolledBack
	case st.HeldBack:
		return PhaseHeldBack
	case la != nil && la.Generation == st.Current && (la.Result == profile.ActivationFailed || la.Result == profile.ActivationInterrupted):
		return PhaseFailed
	case st.Current > 0 && st.Current >= st.Newest:
		return PhaseActive
	}
	return PhasePending
}

// FollowStatuses reports on every followed configuration.
func (a *Agent) FollowStatuses() ([]FollowStatus, error) {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		return nil, err
	}
	prof := profile.OpenProfiles(a.Store)
	out := []FollowStatus{}
	for _, f := range fs {
		st := FollowStatus{Name: f.Name, Activate: f.Activate, Run: f.Run, Timeout: f.Timeout, Newest: a.newestKnown(f.Name)}
		if st.Profile, err = prof.Path(f.Name); err != nil {
			return nil, err
		}
		if st.HeldBack, st.Current, st.Highest, err = prof.HeldBack(f.Name); err != nil {
			return nil, err
		}
		if st.LastActivation, err = prof.LastActivation(f.Name); err != nil {
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
			st.State, st.LastError, st.LastErrorAt, st.Pending = fl.state, fl.lastErr, fl.lastErrAt, fl.waiting
			fl.mu.Unlock()
		}
		if st.Failed, err = prof.Failures(f.Name); err != nil {
			return nil, err
		}
		if g := prof.PendingAtBoot(f.Name); g != 0 && st.Pending == "" {
			st.Pending = fmt.Sprintf("generation %d is selected; its activation runs after the next boot", g)
		}
		st.Phase = phase(st, f.Activate, st.State)
		la := st.LastActivation
		switch {
		case len(a.Keys.Publishers(f.Name)) == 0:
			st.Hint = fmt.Sprintf("no trusted key may publish %s: run `trove trust add KEY --config %s` with the publisher's key", f.Name, f.Name)
		case la != nil && la.Generation == st.Current && (la.Result == profile.ActivationInterrupted || la.Result == profile.ActivationFailed):
			st.Hint = fmt.Sprintf("generation %d is selected but its activation command %s: run `trove activate %s --generation %d --run` to run it again, or `trove rollback %s --run`",
				la.Generation, map[string]string{profile.ActivationInterrupted: "was cut off", profile.ActivationFailed: "failed"}[la.Result], f.Name, la.Generation, f.Name)
		case st.Phase == PhaseRolledBack:
			st.Hint = fmt.Sprintf("generation %d failed its checks here and was rolled back (%s); the next generation published is followed as usual, or `trove activate %s --generation %d --run` tries it again by hand",
				la.Generation, la.Error, f.Name, la.Generation)
		case st.HeldBack && f.Activate:
			st.Hint = fmt.Sprintf("held back at generation %d by a manual switch (it had %d): run `%s` to resume, or `trove activate %s` for the newest", st.Current, st.Highest, f.Command(), f.Name)
		}
		out = append(out, st)
	}
	return out, nil
}

// Publish makes and announces a new generation of name.
func (a *Agent) Publish(ctx context.Context, key manifest.SecretKey, name string, root nix.Path, cmds profile.Commands) (*manifest.Manifest, error) {
	m, _, err := profile.Publish(a.Store, a.History, key, name, root, cmds)
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
