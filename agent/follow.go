package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
		if err := manifest.CheckName(f.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", FollowsPath(home), err)
		}
	}
	return fs, nil
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

// historyBytes serves the manifest protocol from the history.
type historyBytes struct{ h *manifest.History }

func (s historyBytes) ManifestBytes(name string, gen uint64) ([]byte, error) {
	_, b, err := s.h.Get(name, gen)
	return b, err
}

// startFollowing subscribes to every followed configuration, catches up
// now, whenever a peer connects, and every minute.
func (a *Agent) startFollowing(ctx context.Context) error {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if err := a.subscribe(ctx, f.Name); err != nil {
			return err
		}
	}
	a.Node.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		a.kick()
	}})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			a.catchUp(ctx)
			select {
			case <-ctx.Done():
				return
			case <-a.kicks:
			case <-t.C:
			}
		}
	}()
	return nil
}

// kick asks the follow loop to look for new generations now.
func (a *Agent) kick() {
	select {
	case a.kicks <- struct{}{}:
	default:
	}
}

func (a *Agent) subscribe(ctx context.Context, name string) error {
	a.followMu.Lock()
	defer a.followMu.Unlock()
	if a.subscribed[name] {
		return nil
	}
	err := a.Node.Subscribe(ctx, name, func(from peer.ID, ann p2p.Announcement) {
		a.log.Info("new generation announced", "config", name, "generation", ann.Generation, "from", from)
		a.kick()
	})
	if err == nil {
		a.subscribed[name] = true
	}
	return err
}

// catchUp brings every followed configuration to its newest generation.
func (a *Agent) catchUp(ctx context.Context) {
	fs, err := LoadFollows(a.Home)
	if err != nil {
		a.log.Warn("cannot read followed configurations", "err", err)
		return
	}
	for _, f := range fs {
		if err := a.followOnce(ctx, f); err != nil && ctx.Err() == nil {
			a.log.Warn("following failed; will retry", "config", f.Name, "err", err)
		}
	}
}

// followOnce syncs (and activates) the newest generation of f if newer
// than what this machine has.
func (a *Agent) followOnce(ctx context.Context, f Follow) error {
	if len(a.Node.ConnectedPeers()) == 0 {
		return nil
	}
	m, err := trovesync.ResolveManifest(ctx, a.Node, a.History, f.Name, 0)
	if err != nil {
		if errors.Is(err, manifest.ErrUnknown) {
			return nil // nobody has published it yet
		}
		return err
	}
	if ok, _ := a.Store.IsValid(m.Root); !ok {
		end := a.BeginTransfer()
		opts := trovesync.Options{Keys: a.Keys, Logger: a.log}
		if fp := a.cfg.FollowProgress; fp != nil {
			opts.Progress = func(p trovesync.Progress) { fp(f.Name, p) }
		}
		rep, err := trovesync.New(a.Store, a.Node, opts).SyncManifest(ctx, m)
		end()
		if err != nil {
			return err
		}
		a.log.Info("synced configuration", "config", f.Name, "generation", m.Generation,
			"paths", rep.PathsFetched, "bytes", rep.BytesFetched, "reused", rep.BytesReused)
	}
	if !f.Activate {
		return nil
	}
	prof := trovesync.OpenProfiles(a.Store)
	cur, err := prof.Current(f.Name)
	if err != nil || cur >= m.Generation {
		return err
	}
	err = trovesync.Activate(ctx, prof, m, trovesync.ActivateOptions{Run: f.Run, Wait: time.Minute, Stdout: io.Discard, Stderr: logWriter{a}})
	if err != nil {
		return err
	}
	a.log.Info("activated configuration", "config", f.Name, "generation", m.Generation)
	return nil
}

// SetFollow records (or with follow false, drops) a followed configuration
// and starts following it at once.
func (a *Agent) SetFollow(ctx context.Context, f Follow, follow bool) error {
	a.followMu.Lock()
	fs, err := LoadFollows(a.Home)
	if err == nil {
		fs = slices.DeleteFunc(fs, func(o Follow) bool { return o.Name == f.Name })
		if follow {
			fs = append(fs, f)
		}
		err = SaveFollows(a.Home, fs)
	}
	a.followMu.Unlock()
	if err != nil || !follow {
		return err
	}
	if err := a.subscribe(a.bg, f.Name); err != nil {
		return err
	}
	a.kick()
	return nil
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
	if err := a.subscribe(a.bg, name); err != nil {
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
