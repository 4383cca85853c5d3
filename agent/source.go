package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trove-p2p/trove/bundle"
	"github.com/trove-p2p/trove/manifest"
)

// Bundle sources (Config.Sources, `trove agent --source DIR`): trove
// bundles under a directory, such as a mounted USB stick, are a source of
// paths for a machine that no peer can reach.
//
// The design is the simplest correct one. On start and every 30 seconds
// the agent looks in each DIR and up to three directories below it (not in
// hidden ones) for regular files named *.trove, and imports
// each with bundle.Import, verifying everything against the agent's
// trusted keys and history exactly as `trove bundle import` does. A bundle
// with nothing new costs one read of its head; an intact bundle with
// something new makes its paths valid here (so peers can fetch them from
// this agent) and records its manifests. If a followed configuration
// (trove follow NAME --activate) got a newer generation whose closure is
// now valid, the agent activates it, as it would after a sync.
//
// A bundle that fails (damaged, untrusted, cut short by a stick pulled
// mid-copy) leaves only complete, verified paths behind; it is logged once
// and tried again when the file or the trusted keys change.

// sourceInterval is how often sources are scanned; tests shorten it.
var sourceInterval = 30 * time.Second

// sourceDepth bounds how deep under a source directory bundles are sought:
// a bundle's path relative to it has at most this many elements.
const sourceDepth = 4

// bundleExt names the files a source scan imports.
const bundleExt = ".trove"

// sourceFailure remembers a bundle that failed, so that it is retried (and
// logged) only when something that could change the outcome changes.
type sourceFailure struct {
	size    int64
	mod     time.Time
	keysMod time.Time
}

func (a *Agent) startSources(ctx context.Context) {
	if len(a.cfg.Sources) == 0 {
		return
	}
	failed := map[string]sourceFailure{}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(sourceInterval)
		defer t.Stop()
		for {
			for _, dir := range a.cfg.Sources {
				a.scanSource(ctx, dir, failed)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// scanSource imports the bundles under dir.
func (a *Agent) scanSource(ctx context.Context, dir string, failed map[string]sourceFailure) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			a.log.Debug("cannot read part of a bundle source", "path", path, "err", err)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			if path != dir && (strings.HasPrefix(d.Name(), ".") || strings.Count(rel, string(filepath.Separator)) >= sourceDepth-1) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), bundleExt) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		state := sourceFailure{size: fi.Size(), mod: fi.ModTime(), keysMod: modTime(manifest.TrustedKeysPath(a.Home))}
		if f, ok := failed[path]; ok && f == state {
			return nil
		}
		if err := a.importBundle(ctx, path); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed[path] = state
			a.log.Warn("importing a bundle failed; it is tried again when the file or the trusted keys change", "bundle", path, "err", err)
		} else {
			delete(failed, path)
		}
		return nil
	})
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.Is(err, fs.ErrNotExist):
		a.log.Debug("bundle source absent (not mounted?)", "dir", dir)
	default:
		a.log.Warn("cannot scan bundle source", "dir", dir, "err", err)
	}
}

func modTime(file string) time.Time {
	fi, err := os.Stat(file)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// importBundle imports one bundle file and activates what it brought for
// followed configurations.
func (a *Agent) importBundle(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	end := a.BeginTransfer()
	rep, err := bundle.Import(ctx, f, a.Store, a.Keys, a.History, bundle.ImportOptions{Logger: a.log})
	end()
	if rep != nil && rep.PathsAdded > 0 {
		a.log.Info("imported bundle", "bundle", path, "paths", rep.PathsAdded, "bytes", rep.BytesAdded,
			"skipped", rep.PathsSkipped, "complete", err == nil)
	}
	if err != nil {
		return err
	}
	for _, w := range rep.Warnings {
		a.log.Warn(w, "bundle", path)
	}
	for _, m := range rep.Manifests {
		if m.New {
			a.log.Info("bundle brought a configuration generation", "bundle", path, "config", m.Name, "generation", m.Generation)
			a.wakeFollower(m.Name) // again: its closure is valid only now
		}
	}
	return nil
}
