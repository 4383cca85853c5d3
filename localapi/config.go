package localapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/trove-p2p/trove/profile"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// PublishRequest publishes a new generation of configuration Name.
type PublishRequest struct {
	Name     string `json:"name"`
	Root     string `json:"root"`
	Activate string `json:"activate,omitempty"`
	Check    string `json:"check,omitempty"`
	Key      string `json:"key,omitempty"` // the signing key's name; "" for the only one
}

// PublishResponse describes the new generation.
type PublishResponse struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Paths      int    `json:"paths"`
	Key        string `json:"key"`
	// Announced is false when no agent runs: the generation is recorded
	// here, and peers get it when they ask.
	Announced bool `json:"announced"`
}

func doPublish(ctx context.Context, e *Env, req PublishRequest, _ func(Event)) (PublishResponse, error) {
	var r PublishResponse
	if err := manifest.CheckName(req.Name); err != nil {
		return r, &UsageError{err}
	}
	root, err := nix.ParsePathLoose(e.StoreDir, req.Root)
	if err != nil {
		return r, &UsageError{err}
	}
	key, err := manifest.LoadSigningKey(manifest.KeysDir(e.Home), req.Key)
	if err != nil {
		return r, err
	}
	// Your own key is trusted for what you publish with it.
	kr, err := e.Keys()
	if err != nil {
		return r, err
	}
	if !kr.TrustedFor(key.Public(), req.Name) {
		if err := kr.Add(key.Public(), append(kr.Configs(key.Name), req.Name)...); err != nil {
			return r, err
		}
	}
	var m *manifest.Manifest
	if ag := e.agent; ag != nil {
		m, err = ag.Publish(ctx, key, req.Name, root, profile.Commands{Activate: req.Activate, Check: req.Check})
	} else {
		s, _, h, terr := e.trusted()
		if terr != nil {
			return r, terr
		}
		m, _, err = profile.Publish(s, h, key, req.Name, root, profile.Commands{Activate: req.Activate, Check: req.Check})
	}
	if err != nil {
		return r, err
	}
	return PublishResponse{Name: req.Name, Generation: m.Generation, Paths: len(m.Paths), Key: key.Name, Announced: e.agent != nil}, nil
}

// FollowRequest starts (Follow) or stops following a configuration.
type FollowRequest struct {
	Follow agent.Follow `json:"follow"`
	Stop   bool         `json:"stop,omitempty"`
	// Profile, if set, is where the configuration's profile link is
	// (absolute), recorded for it (profile.Profiles.Record).
	Profile string `json:"profile,omitempty"`
}

// FollowResponse says how the change took effect.
type FollowResponse struct {
	// Agent is true when a running agent acts on it at once.
	Agent bool `json:"agent"`
	// NoPublisher is true when no trusted key may publish the
	// configuration, so every generation of it will be refused.
	NoPublisher bool `json:"noPublisher,omitempty"`
}

func doSetFollow(ctx context.Context, e *Env, req FollowRequest, _ func(Event)) (FollowResponse, error) {
	var r FollowResponse
	f, follow := req.Follow, !req.Stop
	if follow {
		if err := manifest.CheckName(f.Name); err != nil {
			return r, &UsageError{err}
		}
		kr, err := e.Keys()
		if err != nil {
			return r, err
		}
		r.NoPublisher = len(kr.Publishers(f.Name)) == 0
	}
	if req.Profile != "" {
		if !follow {
			return r, &UsageError{errors.New("--profile is for following, not unfollowing")}
		}
		// Before the follower starts, so that its first activation
		// lands there.
		if _, err := e.profilesAt(f.Name, req.Profile, true); err != nil {
			return r, err
		}
	}
	if ag := e.agent; ag != nil {
		r.Agent = true
		return r, ag.SetFollow(ctx, f, follow)
	}
	prof, err := e.Profiles()
	if err != nil {
		return r, err
	}
	return r, agent.RecordFollow(e.Home, prof, f, follow)
}

// ActivateRequest switches profile Name to a generation of its
// configuration.
type ActivateRequest struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation,omitempty"` // 0: the newest
	Run        bool   `json:"run,omitempty"`        // run the activation command
	DryRun     bool   `json:"dryRun,omitempty"`
	// Timeout bounds the activation command; 0 is config.toml's, else
	// sync.DefaultActivationTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// User runs the activation command as that user ("": the profile's
	// owner; profile/runas.go).
	User string `json:"user,omitempty"`
	// Profile, if set, is where the profile link of Name is (absolute):
	// recorded for Name (profile.Profiles.Record), so later commands and
	// the agent's follower use it.
	Profile string `json:"profile,omitempty"`
	// NixProfile, if set, is a real Nix profile (absolute) also set to
	// the generation's root with nix-env --set, after importing its
	// closure into Nix. With the Nix store, whose profiles are Nix's
	// already, it is Profile.
	NixProfile string `json:"nixProfile,omitempty"`
}

// SwitchResponse says what an activation or rollback switched.
type SwitchResponse struct {
	Name string `json:"name"`
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	Root string `json:"root"`
	// Switched is true once the profile points at To (even if its
	// activation command then failed).
	Switched bool `json:"switched,omitempty"`
	// For a dry run: what would be fetched, and run.
	DryRun       bool   `json:"dryRun,omitempty"`
	Missing      int    `json:"missing,omitempty"`
	Total        int    `json:"total,omitempty"`
	MissingBytes uint64 `json:"missingBytes,omitempty"`
	Run          string `json:"run,omitempty"`
	// Profile is where the profile link is.
	Profile string `json:"profile,omitempty"`
	// NixProfile is the real Nix profile set, if any.
	NixProfile string `json:"nixProfile,omitempty"`
	// Held, if set, says a followed profile is now held back.
	Held *Held `json:"held,omitempty"`
}

// Held says a followed profile switched back by hand is held there.
type Held struct {
	Current uint64 `json:"current"`
	Highest uint64 `json:"highest"`
	// Resume is the command that resumes following.
	Resume string `json:"resume"`
}

// activateOptions are the options of a manual activation: the activation
// command's timeout (the request's, else config.toml's, else the
// default), and a wait for another activation of the profile that lasts
// as long as that one may run, telling what it waits for.
func activateOptions(e *Env, run bool, timeout time.Duration, ev func(Event)) (profile.ActivateOptions, error) {
	fc, err := agent.LoadConfig(e.Home)
	if err != nil {
		return profile.ActivateOptions{}, err
	}
	configured := fc.Agent.ActivationTimeout()
	if timeout <= 0 {
		timeout = configured
	}
	return profile.ActivateOptions{
		Run: run, Timeout: timeout, Wait: max(timeout, configured) + 15*time.Second,
		OnWait: func(holder string) { ev(Event{WaitingFor: holder}) },
		Stdout: eventWriter{ev, 1}, Stderr: eventWriter{ev, 2},
	}, nil
}

// eventWriter sends what is written to it as Output events.
type eventWriter struct {
	ev     func(Event)
	stream int
}

func (w eventWriter) Write(p []byte) (int, error) {
	w.ev(Event{Output: &Output{Stream: w.stream, Data: append([]byte(nil), p...)}})
	return len(p), nil
}

var _ io.Writer = eventWriter{}

func doActivate(ctx context.Context, e *Env, req ActivateRequest, ev func(Event)) (SwitchResponse, error) {
	r := SwitchResponse{Name: req.Name, DryRun: req.DryRun}
	if err := manifest.CheckName(req.Name); err != nil {
		return r, &UsageError{err}
	}
	h, err := e.History()
	if err != nil {
		return r, err
	}
	m, _, err := h.Get(req.Name, req.Generation)
	if errors.Is(err, manifest.ErrUnknown) {
		ref := req.Name
		if req.Generation > 0 {
			ref = fmt.Sprintf("%s@%d", req.Name, req.Generation)
		}
		return r, fmt.Errorf("%w; fetch it first with `trove sync %s`", err, ref)
	}
	if err != nil {
		return r, err
	}
	s, err := e.Store()
	if err != nil {
		return r, err
	}
	nixProfile := req.NixProfile
	if nixProfile != "" && s.Backend() == store.BackendNix {
		// The profile is a Nix profile already, of the same store: what
		// --nix-profile asks for is where it is, with nothing to import
		// and trove's generation numbers, which a second profile set by
		// nix-env --set (numbered by Nix) would not keep.
		if req.Profile != "" && req.Profile != nixProfile {
			return r, &UsageError{fmt.Errorf("with the Nix store, --nix-profile %s is --profile %s: give one of them", nixProfile, nixProfile)}
		}
		req.Profile, nixProfile = nixProfile, ""
		r.NixProfile = req.Profile
	}
	// Checked now, recorded only when the profile switches.
	prof, err := e.profilesAt(req.Name, req.Profile, false)
	if err != nil {
		return r, err
	}
	r.Profile, _ = prof.Path(req.Name)
	r.From, _ = prof.Current(req.Name)
	r.To, r.Root, r.Total = m.Generation, m.Root.Abs(s.StoreDir()), len(m.Paths)
	for _, pi := range m.Paths {
		if ok, _ := s.IsValid(pi.Path); !ok {
			r.Missing++
			r.MissingBytes += pi.NarSize
		}
	}
	if req.DryRun {
		if req.Run {
			r.Run = m.Activate
		}
		return r, nil
	}
	if r.Missing > 0 {
		return r, fmt.Errorf("%d paths of %s generation %d are not here; fetch them with `trove sync %s@%d`", r.Missing, req.Name, m.Generation, req.Name, m.Generation)
	}
	opts, err := activateOptions(e, req.Run, req.Timeout, ev)
	opts.User = req.User
	if err != nil {
		return r, err
	}
	if req.Profile != "" {
		if err := prof.Record(req.Name, req.Profile); err != nil {
			return r, err
		}
	}
	err = profile.Activate(ctx, prof, m, opts)
	if err != nil && !IsActivationFailure(err) {
		return r, err
	}
	r.Switched = true
	r.Held = heldBack(e.Home, prof, req.Name)
	if nixProfile != "" {
		if nerr := setNixProfile(ctx, s, h, nixProfile, m.Root); nerr != nil {
			return r, nerr
		}
		r.NixProfile = nixProfile
	}
	return r, err
}

// RollbackRequest switches profile Name back to the generation before the
// current one, or To.
type RollbackRequest struct {
	Name    string        `json:"name"`
	To      uint64        `json:"to,omitempty"`
	Run     bool          `json:"run,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"` // as ActivateRequest's
	Profile string        `json:"profile,omitempty"` // as ActivateRequest's
	User    string        `json:"user,omitempty"`    // as ActivateRequest's
}

func doRollback(ctx context.Context, e *Env, req RollbackRequest, ev func(Event)) (SwitchResponse, error) {
	r := SwitchResponse{Name: req.Name}
	prof, gens, err := e.generations(req.Name, req.Profile, true)
	if err != nil {
		return r, err
	}
	r.Profile, _ = prof.Path(req.Name)
	if r.From, err = prof.Current(req.Name); err != nil {
		return r, err
	}
	if r.To, err = profile.RollbackTarget(req.Name, gens, r.From, req.To); err != nil {
		return r, err
	}
	root, err := prof.Root(req.Name, r.To)
	if err != nil {
		return r, err
	}
	r.Root = root.Abs(e.StoreDir)
	var rel string
	if req.Run {
		h, err := e.History()
		if err != nil {
			return r, err
		}
		m, _, err := h.Get(req.Name, r.To)
		if err != nil {
			return r, fmt.Errorf("cannot run the activation command: %w", err)
		}
		rel = m.Activate
	}
	opts, err := activateOptions(e, req.Run, req.Timeout, ev)
	opts.User = req.User
	if err != nil {
		return r, err
	}
	err = prof.Activate(ctx, req.Name, r.To, root, rel, opts)
	if err != nil && !IsActivationFailure(err) {
		return r, err
	}
	r.Switched = true
	r.Held = heldBack(e.Home, prof, req.Name)
	return r, err
}

// heldBack says whether a followed profile switched back by hand is now
// held there, and how to resume.
func heldBack(home string, prof *profile.Profiles, name string) *Held {
	held, cur, highest, err := prof.HeldBack(name)
	if err != nil || !held {
		return nil
	}
	fs, err := agent.LoadFollows(home)
	if err != nil {
		return nil
	}
	for _, f := range fs {
		if f.Name == name && f.Activate {
			return &Held{Current: cur, Highest: highest, Resume: f.Command()}
		}
	}
	return nil
}

// GenerationsRequest lists the generations of profile Name.
type GenerationsRequest struct {
	Name string `json:"name"`
	// Profile, if set, is where Name's profile is; it must be the one
	// recorded, unless Name has no generations where its profile was.
	// Nothing is recorded.
	Profile string `json:"profile,omitempty"`
}

// GenerationsResponse lists generations, oldest first.
type GenerationsResponse struct {
	Generations []profile.Generation `json:"generations"`
}

func doGenerations(ctx context.Context, e *Env, req GenerationsRequest, _ func(Event)) (GenerationsResponse, error) {
	var r GenerationsResponse
	var err error
	_, r.Generations, err = e.generations(req.Name, req.Profile, false)
	if r.Generations == nil {
		r.Generations = []profile.Generation{}
	}
	return r, err
}

// DeleteGenerationsRequest deletes the generations of Name that the
// selectors pick (never the current one).
type DeleteGenerationsRequest struct {
	Name      string             `json:"name"`
	Selectors []profile.Selector `json:"selectors"`
	Profile   string             `json:"profile,omitempty"` // as GenerationsRequest's
}

// DeleteGenerationsResponse counts the generations deleted.
type DeleteGenerationsResponse struct {
	Deleted int `json:"deleted"`
}

func doDeleteGenerations(ctx context.Context, e *Env, req DeleteGenerationsRequest, _ func(Event)) (DeleteGenerationsResponse, error) {
	var r DeleteGenerationsResponse
	prof, gens, err := e.generations(req.Name, req.Profile, false)
	if err != nil {
		return r, err
	}
	var doomed []uint64
	now := time.Now()
	for _, sel := range req.Selectors {
		doomed = append(doomed, sel.Select(gens, now)...)
	}
	if err := prof.Delete(req.Name, doomed...); err != nil {
		return r, err
	}
	r.Deleted = len(doomed)
	return r, nil
}

// ManifestInfo is how a manifest is shown.
type ManifestInfo struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	ID         string `json:"id"`
	Root       string `json:"root"`
	Activate   string `json:"activate,omitempty"`
	Created    string `json:"created"`
	Publisher  string `json:"publisher"`
	Previous   string `json:"previous,omitempty"`
	Paths      int    `json:"paths"`
	NarBytes   uint64 `json:"narBytes"`
}

func manifestInfo(m *manifest.Manifest, storeDir string) ManifestInfo {
	id, _ := m.ID()
	j := ManifestInfo{Name: m.Name, Generation: m.Generation, ID: id.String(), Root: m.Root.Abs(storeDir),
		Activate: m.Activate, Created: m.Created.UTC().Format(time.RFC3339), Publisher: m.Publisher.String(), Paths: len(m.Paths)}
	if !m.Previous.IsZero() {
		j.Previous = m.Previous.String()
	}
	for _, pi := range m.Paths {
		j.NarBytes += pi.NarSize
	}
	return j
}

// ShowManifestRequest asks for generation Generation (0: the newest) of
// configuration Name.
type ShowManifestRequest struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation,omitempty"`
}

func doShowManifest(ctx context.Context, e *Env, req ShowManifestRequest, _ func(Event)) (ManifestInfo, error) {
	h, err := e.History()
	if err != nil {
		return ManifestInfo{}, err
	}
	m, _, err := h.Get(req.Name, req.Generation)
	if err != nil {
		return ManifestInfo{}, err
	}
	return manifestInfo(m, e.StoreDir), nil
}

// ListManifestsRequest lists every manifest known here.
type ListManifestsRequest struct{}

// ListManifestsResponse lists manifests by configuration, then generation.
type ListManifestsResponse struct {
	Manifests []ManifestInfo `json:"manifests"`
}

func doListManifests(ctx context.Context, e *Env, _ ListManifestsRequest, _ func(Event)) (ListManifestsResponse, error) {
	r := ListManifestsResponse{Manifests: []ManifestInfo{}}
	h, err := e.History()
	if err != nil {
		return r, err
	}
	names, err := h.Names()
	if err != nil {
		return r, err
	}
	for _, n := range names {
		gens, err := h.Generations(n)
		if err != nil {
			return r, err
		}
		for _, g := range gens {
			if m, _, err := h.Get(n, g); err == nil {
				r.Manifests = append(r.Manifests, manifestInfo(m, e.StoreDir))
			}
		}
	}
	return r, nil
}
