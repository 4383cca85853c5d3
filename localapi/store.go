package localapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/profile"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixcache"
	"github.com/trove-p2p/trove/store"
)

// InitRequest asks to create the home.
type InitRequest struct{}

// InitResponse says whether the home was created, or what it holds.
type InitResponse struct {
	Home     string `json:"home"`
	StoreDir string `json:"storeDir"`
	Store    string `json:"store"` // "embedded" or "nix"
	Created  bool   `json:"created"`
	Paths    int    `json:"paths"`
	Bytes    uint64 `json:"bytes"`
}

func doInit(ctx context.Context, e *Env, _ InitRequest, _ func(Event)) (InitResponse, error) {
	_, err := os.Stat(filepath.Join(e.Home, "db"))
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return InitResponse{}, err
	}
	s, err := e.Store()
	if err != nil {
		return InitResponse{}, err
	}
	r := InitResponse{Home: s.Home(), StoreDir: s.StoreDir(), Store: s.Backend(), Created: !existed}
	if existed {
		r.Paths, r.Bytes, err = s.StoreSize(ctx)
	}
	return r, err
}

// AddRequest adds files or trees (absolute paths) to the store.
type AddRequest struct {
	Paths []string `json:"paths"`
	// Shown are the paths as the user wrote them, for messages.
	Shown []string `json:"shown"`
	Name  string   `json:"name,omitempty"` // store path name (one path only)
	Root  bool     `json:"root,omitempty"` // also make each a GC root
}

// AddResponse lists the store paths added, in order; on an error, those
// added before it.
type AddResponse struct {
	Paths []string `json:"paths"`
}

func doAdd(ctx context.Context, e *Env, req AddRequest, _ func(Event)) (AddResponse, error) {
	var r AddResponse
	if req.Name != "" && len(req.Paths) > 1 {
		return r, usagef("--name names one path, but %d were given", len(req.Paths))
	}
	s, err := e.Store()
	if err != nil {
		return r, err
	}
	for i, abs := range req.Paths {
		shown := abs
		if i < len(req.Shown) {
			shown = req.Shown[i]
		}
		if _, err := os.Lstat(abs); err != nil {
			return r, fmt.Errorf("cannot add %s: %w", shown, BareError(err, abs))
		}
		n := req.Name
		if n == "" {
			n = filepath.Base(abs)
		}
		pi, err := s.AddTree(ctx, abs, n)
		if err != nil {
			return r, err
		}
		if req.Root {
			if err := s.AddRoot(pi.Path); err != nil {
				return r, err
			}
		}
		r.Paths = append(r.Paths, pi.Path.Abs(s.StoreDir()))
	}
	return r, nil
}

// BareError strips the operation and path from an *fs.PathError about
// path itself, for messages that already name it: "no such file or
// directory". Errors about other files (inside a tree) keep their path.
func BareError(err error, path string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && filepath.Clean(pe.Path) == filepath.Clean(path) {
		return pe.Err
	}
	return err
}

// ImportNixRequest copies closures from the local Nix store.
type ImportNixRequest struct {
	Paths []string `json:"paths"` // store paths (or what nix accepts)
}

// ImportResponse counts what an import added; on an error, what it added
// before.
type ImportResponse struct {
	Added int    `json:"added"`
	Bytes uint64 `json:"bytes"`
}

func doImportNix(ctx context.Context, e *Env, req ImportNixRequest, ev func(Event)) (ImportResponse, error) {
	var r ImportResponse
	s, err := e.Store()
	if err != nil {
		return r, err
	}
	added, err := s.ImportNix(ctx, req.Paths, func(pi *nix.PathInfo) {
		r.Bytes += pi.NarSize
		ev(Event{Imported: &ImportedPath{Path: pi.Path.Abs(s.StoreDir()), NarSize: pi.NarSize}})
	})
	r.Added = len(added)
	return r, err
}

// ImportCacheRequest copies closures from a Nix binary cache.
type ImportCacheRequest struct {
	URL         string        `json:"url"`
	Paths       []string      `json:"paths"`
	NoCheckSigs bool          `json:"noCheckSigs,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
}

func doImportCache(ctx context.Context, e *Env, req ImportCacheRequest, _ func(Event)) (ImportResponse, error) {
	var r ImportResponse
	s, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return r, err
	}
	keys, err := e.Keys()
	if err != nil {
		return r, err
	}
	var opts []nixcache.ImportOption
	if req.Timeout > 0 {
		opts = append(opts, nixcache.WithTimeout(req.Timeout))
	}
	added, err := nixcache.ImportCache(ctx, s, keys, req.URL, paths, !req.NoCheckSigs, opts...)
	for _, pi := range added {
		r.Bytes += pi.NarSize
	}
	r.Added = len(added)
	return r, err
}

// PathInfoRequest asks what the store knows of paths.
type PathInfoRequest struct {
	Paths       []string `json:"paths"`
	All         bool     `json:"all,omitempty"`       // every valid path
	Recursive   bool     `json:"recursive,omitempty"` // the closures
	ClosureSize bool     `json:"closureSize,omitempty"`
}

// PathInfoResponse lists the paths, references first, as nix path-info
// --json shows them (ClosureSize only when asked).
type PathInfoResponse struct {
	Infos []nix.NixPathInfo `json:"infos"`
}

func doPathInfo(ctx context.Context, e *Env, req PathInfoRequest, _ func(Event)) (PathInfoResponse, error) {
	var r PathInfoResponse
	s, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return r, err
	}
	infos, err := selectPaths(ctx, s, paths, req.All, req.Recursive)
	if err != nil {
		return r, err
	}
	r.Infos = make([]nix.NixPathInfo, 0, len(infos))
	for _, pi := range infos {
		n := pi.ToNix(s.StoreDir())
		if req.ClosureSize {
			if n.ClosureSize, err = closureSize(s, pi.Path); err != nil {
				return r, err
			}
		}
		r.Infos = append(r.Infos, n)
	}
	return r, nil
}

func selectPaths(ctx context.Context, s *store.Store, paths []nix.Path, all, recursive bool) ([]*nix.PathInfo, error) {
	if all {
		err := s.Paths(ctx, func(pi *nix.PathInfo) error {
			paths = append(paths, pi.Path)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Every named path must be valid, even one another's closure holds.
	for _, p := range paths {
		if _, err := s.Lookup(p); err != nil {
			return nil, err
		}
	}
	roots := slices.Clone(paths)
	slices.SortFunc(roots, nix.Path.Compare)
	roots = slices.Compact(roots)
	infos, err := s.Closure(roots...)
	if err != nil || recursive || all {
		return infos, err
	}
	asked := make(map[nix.Path]bool, len(roots))
	for _, p := range roots {
		asked[p] = true
	}
	return slices.DeleteFunc(infos, func(pi *nix.PathInfo) bool { return !asked[pi.Path] }), nil
}

func closureSize(s *store.Store, p nix.Path) (uint64, error) {
	infos, err := s.Closure(p)
	var sum uint64
	for _, pi := range infos {
		sum += pi.NarSize
	}
	return sum, err
}

// PathsRequest names store paths.
type PathsRequest struct {
	Paths []string `json:"paths"`
}

// PathsResponse lists store paths; on an error, those done before it.
type PathsResponse struct {
	Paths []string `json:"paths"`
}

func doClosure(ctx context.Context, e *Env, req PathsRequest, _ func(Event)) (PathsResponse, error) {
	var r PathsResponse
	s, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return r, err
	}
	infos, err := selectPaths(ctx, s, paths, false, true)
	if err != nil {
		return r, err
	}
	r.Paths = make([]string, len(infos))
	for i, pi := range infos {
		r.Paths[i] = pi.Path.Abs(s.StoreDir())
	}
	return r, nil
}

// VerifyRequest checks paths (or all) against their hashes.
type VerifyRequest struct {
	Paths []string `json:"paths"`
	All   bool     `json:"all,omitempty"`
}

// VerifyProblem is one problem found.
type VerifyProblem struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// VerifyReport is what trove verify --json prints.
type VerifyReport struct {
	Checked  int             `json:"checked"`
	Problems []VerifyProblem `json:"problems"`
}

func doVerify(ctx context.Context, e *Env, req VerifyRequest, _ func(Event)) (VerifyReport, error) {
	rep := VerifyReport{Problems: []VerifyProblem{}}
	s, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return rep, err
	}
	rep.Checked, err = s.Verify(ctx, paths, func(p store.Problem) {
		rep.Problems = append(rep.Problems, VerifyProblem{Path: p.Path.Abs(s.StoreDir()), Kind: p.Kind, Detail: p.Detail})
	})
	return rep, err
}

// GCRequest removes what no GC root needs.
type GCRequest struct {
	DryRun bool `json:"dryRun,omitempty"`
}

// GCReport is what trove gc --json prints.
type GCReport struct {
	DryRun     bool     `json:"dryRun"`
	Removed    []string `json:"removed"`
	BytesFreed uint64   `json:"bytesFreed"`
	// The spools (partly fetched NARs) of stopped syncs: removed, the
	// disk they took, and those kept because a sync is using them.
	SpoolsRemoved   int   `json:"spoolsRemoved"`
	SpoolBytesFreed int64 `json:"spoolBytesFreed"`
	SpoolsInUse     int   `json:"spoolsInUse"`
}

func doGC(ctx context.Context, e *Env, req GCRequest, _ func(Event)) (GCReport, error) {
	rep := GCReport{DryRun: req.DryRun, Removed: []string{}}
	s, err := e.Store()
	if err != nil {
		return rep, err
	}
	res, err := s.GC(ctx, req.DryRun, profile.OpenProfiles(s).Roots)
	if res != nil {
		rep.BytesFreed = res.BytesFreed
		for _, p := range res.Removed {
			rep.Removed = append(rep.Removed, p.Abs(s.StoreDir()))
		}
	}
	if err != nil {
		return rep, err
	}
	spools, err := fetch.CollectSpools(fetch.DefaultSpoolDir(s), req.DryRun)
	if err != nil {
		return rep, fmt.Errorf("removing the spools of stopped syncs: %w", err)
	}
	rep.SpoolsRemoved, rep.SpoolBytesFreed, rep.SpoolsInUse = spools.Removed, spools.BytesFreed, spools.InUse
	return rep, nil
}

func doRootAdd(ctx context.Context, e *Env, req PathsRequest, _ func(Event)) (PathsResponse, error) {
	return eachRoot(e, req, (*store.Store).AddRoot)
}

func doRootRemove(ctx context.Context, e *Env, req PathsRequest, _ func(Event)) (PathsResponse, error) {
	return eachRoot(e, req, (*store.Store).RemoveRoot)
}

func eachRoot(e *Env, req PathsRequest, fn func(*store.Store, nix.Path) error) (r PathsResponse, err error) {
	s, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return r, err
	}
	r.Paths, err = each(paths, func(p nix.Path) (string, error) { return p.Abs(s.StoreDir()), fn(s, p) })
	return r, err
}

// RootListRequest lists the GC roots.
type RootListRequest struct{}

func doRootList(ctx context.Context, e *Env, _ RootListRequest, _ func(Event)) (PathsResponse, error) {
	r := PathsResponse{Paths: []string{}}
	s, err := e.Store()
	if err != nil {
		return r, err
	}
	roots, err := s.Roots()
	for _, p := range roots {
		r.Paths = append(r.Paths, p.Abs(s.StoreDir()))
	}
	return r, err
}
