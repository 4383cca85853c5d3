package bundle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/trove-p2p/trove/nix"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
)

// ImportOptions configure Import. The zero value verifies everything.
type ImportOptions struct {
	// NoCheckSigs believes every path info in the bundle, and ignores
	// (does not record) manifests that are not trusted. For tests only: it
	// lets a bundle make any content valid under any path name.
	NoCheckSigs bool
	// Progress, if set, is called after each path is added or skipped.
	Progress func(pi *nix.PathInfo, added bool)
	Logger   *slog.Logger
}

// Report says what an import did.
type Report struct {
	PathsAdded   int              `json:"pathsAdded"`
	BytesAdded   uint64           `json:"bytesAdded"` // NAR bytes
	PathsSkipped int              `json:"pathsSkipped"`
	BytesSkipped uint64           `json:"bytesSkipped"`
	Manifests    []ManifestReport `json:"manifests"`
	// NothingNew is set when every path was already valid and every
	// manifest already known: nothing past the head was read or verified.
	NothingNew bool     `json:"nothingNew,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// ManifestReport is one manifest of an imported bundle.
type ManifestReport struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	New        bool   `json:"new"`               // recorded in the history now
	Ignored    string `json:"ignored,omitempty"` // why it was not recorded (NoCheckSigs only)
}

// ErrUntrusted is wrapped by errors about paths or manifests in a bundle
// that nothing trusted vouches for.
var ErrUntrusted = errors.New("not vouched for by anything trusted")

// Import reads a bundle from r and makes its paths valid in s, verifying
// everything as doc.go describes: every path info is believed (through a
// trusted manifest in the bundle, a trusted signature or its content
// address) before the first NAR is read, each NAR is checked against its
// believed narHash as it is unpacked, and the manifests are recorded in h
// only once every NAR has been added. keys decides trust; h may be nil for
// a bundle without manifests. On error the report says what was added
// before it: complete, verified paths, each with its closure.
func Import(ctx context.Context, r io.Reader, s *store.Store, keys *manifest.Keyring, h *manifest.History, opts ImportOptions) (*Report, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rep := &Report{Manifests: []ManifestReport{}}
	rd := newReader(r)
	hd, err := rd.readHead()
	if err != nil {
		return rep, err
	}
	if hd.storeDir != s.StoreDir() {
		return rep, fmt.Errorf("the bundle's paths are named under store dir %s, this store uses %s: import it into a home with --store-dir %s", hd.storeDir, s.StoreDir(), hd.storeDir)
	}
	ms := make([]*manifest.Manifest, len(hd.manifests))
	for i, b := range hd.manifests {
		if ms[i], err = manifest.Decode(b); err != nil {
			return rep, fmt.Errorf("manifest %d of the bundle: %w", i+1, err)
		}
		if h == nil {
			return rep, errors.New("the bundle holds manifests but no history was given to record them in")
		}
	}

	// What is new here?
	valid := make([]bool, len(hd.infos))
	missing := 0
	for i, pi := range hd.infos {
		if valid[i], err = s.IsValid(pi.Path); err != nil {
			return rep, err
		}
		if !valid[i] {
			missing++
		}
	}
	known := make([]bool, len(ms))
	allKnown := true
	for i, m := range ms {
		_, b, err := h.Get(m.Name, m.Generation)
		known[i] = err == nil && string(b) == string(hd.manifests[i])
		allKnown = allKnown && known[i]
	}
	if missing == 0 && allKnown {
		rep.NothingNew = true
		for _, pi := range hd.infos {
			rep.PathsSkipped++
			rep.BytesSkipped += pi.NarSize
		}
		for _, m := range ms {
			rep.Manifests = append(rep.Manifests, ManifestReport{Name: m.Name, Generation: m.Generation})
		}
		return rep, nil
	}

	// Which manifests vouch: trusted for their name, not stale, closed here.
	var trusted []int
	vouch := map[nix.PathHash][]*manifest.Manifest{}
	for i, m := range ms {
		if err := checkManifest(keys, h, m, known[i]); err != nil {
			if !opts.NoCheckSigs {
				return rep, err
			}
			rep.Manifests = append(rep.Manifests, ManifestReport{Name: m.Name, Generation: m.Generation, Ignored: err.Error()})
			continue
		}
		for _, pi := range m.Paths {
			if j, ok := hd.index[pi.Path.Hash]; ok && hd.infos[j].Path == pi.Path {
				continue
			}
			if ok, err := s.IsValid(pi.Path); err != nil {
				return rep, err
			} else if !ok {
				return rep, fmt.Errorf("%w: the closure of %s@%d is incomplete: %s is neither in the bundle nor in this store", ErrBadBundle, m.Name, m.Generation, pi.Path.Abs(s.StoreDir()))
			}
		}
		trusted = append(trusted, i)
		for _, pi := range m.Paths {
			vouch[pi.Path.Hash] = append(vouch[pi.Path.Hash], m)
		}
	}

	// Believe every path to add, and check its references will be valid
	// before it, before reading a single NAR.
	var problems []error
	for i, pi := range hd.infos {
		if valid[i] {
			continue
		}
		for _, ref := range pi.References {
			if _, ok := hd.index[ref.Hash]; ok || ref == pi.Path {
				continue // earlier in the bundle (readHead checked)
			}
			if ok, err := s.IsValid(ref); err != nil {
				return rep, err
			} else if !ok {
				problems = append(problems, fmt.Errorf("%w: %s refers to %s, which is neither in the bundle nor in this store",
					ErrBadBundle, pi.Path.Abs(s.StoreDir()), ref.Abs(s.StoreDir())))
			}
		}
		if err := believe(s.StoreDir(), keys, pi, vouch[pi.Path.Hash], opts.NoCheckSigs); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		const show = 5
		if len(problems) > show {
			problems = append(problems[:show], fmt.Errorf("and %d more", len(problems)-show))
		}
		return rep, fmt.Errorf("refusing the bundle, nothing was imported: %w", errors.Join(problems...))
	}

	// The NARs, references first.
	for i, pi := range hd.infos {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		lr, err := rd.narFrame(pi)
		if err != nil {
			return rep, err
		}
		if !valid[i] {
			valid[i], _ = s.IsValid(pi.Path) // another writer may have added it
		}
		if valid[i] {
			if err := rd.skip(lr); err != nil {
				return rep, err
			}
			rep.PathsSkipped++
			rep.BytesSkipped += pi.NarSize
			if opts.Progress != nil {
				opts.Progress(pi, false)
			}
			continue
		}
		got, err := s.AddNAR(ctx, pi, lr)
		if err != nil {
			return rep, err // AddNAR names the path; nothing of it is valid
		}
		if lr.N > 0 {
			// It became valid meanwhile and AddNAR read nothing.
			if err := rd.skip(lr); err != nil {
				return rep, err
			}
			rep.PathsSkipped++
			rep.BytesSkipped += pi.NarSize
			continue
		}
		rep.PathsAdded++
		rep.BytesAdded += pi.NarSize
		opts.Logger.Debug("imported from bundle", "path", pi.Path, "narSize", pi.NarSize)
		for _, m := range vouch[pi.Path.Hash] {
			if v := findPath(m, pi.Path); v != nil && v.ChunkIndex != got.ChunkIndex {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: its chunk index here differs from the one in %s@%d (a different trove version chunked it): peers syncing that manifest will not take it from this machine",
					pi.Path.Abs(s.StoreDir()), m.Name, m.Generation))
			}
		}
		if opts.Progress != nil {
			opts.Progress(got, true)
		}
	}
	if err := rd.end(); err != nil {
		return rep, err
	}

	// Oldest first, so that two generations of one name both get in.
	slices.SortFunc(trusted, func(i, j int) int {
		return cmp.Or(strings.Compare(ms[i].Name, ms[j].Name), cmp.Compare(ms[i].Generation, ms[j].Generation))
	})
	for _, i := range trusted {
		m, isNew, err := h.Add(hd.manifests[i])
		if err != nil {
			return rep, fmt.Errorf("recording %s@%d: %w", ms[i].Name, ms[i].Generation, err)
		}
		rep.Manifests = append(rep.Manifests, ManifestReport{Name: m.Name, Generation: m.Generation, New: isNew})
	}
	return rep, nil
}

// checkManifest applies the history's rules to a manifest before anything
// it vouches for is added: its publisher is trusted for its name, and it is
// not older than the newest generation known unless it is that very one.
func checkManifest(keys *manifest.Keyring, h *manifest.History, m *manifest.Manifest, known bool) error {
	ref := fmt.Sprintf("%s@%d", m.Name, m.Generation)
	if keys == nil {
		return fmt.Errorf("%s: %w: no trusted keys", ref, ErrUntrusted)
	}
	if err := keys.VerifyManifest(m); err != nil {
		return fmt.Errorf("the bundle's manifest %s: %w", ref, err)
	}
	if known {
		return nil
	}
	gens, err := h.Generations(m.Name)
	if err != nil {
		return err
	}
	if len(gens) > 0 && gens[len(gens)-1] >= m.Generation {
		return fmt.Errorf("the bundle's manifest %s: %w (%d): make a bundle of the newest generation", ref, manifest.ErrStale, gens[len(gens)-1])
	}
	return nil
}

// believe decides whether pi may become valid: a trusted manifest lists
// it with the same contents, a trusted key signed it, or its content
// address recomputes to its path.
func believe(storeDir string, keys *manifest.Keyring, pi *nix.PathInfo, vouchers []*manifest.Manifest, noCheckSigs bool) error {
	where := pi.Path.Abs(storeDir)
	for _, m := range vouchers {
		if v := findPath(m, pi.Path); v == nil || !sameInfo(v, pi) {
			return fmt.Errorf("%w: %s: its path info differs from the signed manifest %s@%d", ErrBadBundle, where, m.Name, m.Generation)
		}
	}
	if len(vouchers) > 0 || noCheckSigs {
		return nil
	}
	if keys != nil {
		if _, ok := keys.VerifyPathInfo(storeDir, pi); ok {
			return nil
		}
	}
	if pi.ContentAddressed(storeDir) {
		return nil // AddNAR checks the NAR against the content address
	}
	if len(pi.Sigs) == 0 {
		return fmt.Errorf("%s: %w: no manifest in the bundle lists it, it has no signature and it is not content-addressed; bundle a published configuration (trove bundle create NAME) or trust a key that signed it", where, ErrUntrusted)
	}
	names := make([]string, len(pi.Sigs))
	for i, sig := range pi.Sigs {
		names[i], _, _ = strings.Cut(sig, ":")
	}
	return fmt.Errorf("%s: %w: no manifest in the bundle lists it and no trusted key signed it (signed by %v); trust one with `trove trust add NAME:KEY`", where, ErrUntrusted, names)
}

// sameInfo reports whether two infos describe the same content the same
// way: everything a manifest signs but the chunk index ID.
func sameInfo(a, b *nix.PathInfo) bool {
	return a.Path == b.Path && a.NarHash == b.NarHash && a.NarSize == b.NarSize &&
		slices.Equal(a.References, b.References) && a.Deriver == b.Deriver && a.CA == b.CA
}

// findPath returns m's info of p (m.Paths is sorted by path).
func findPath(m *manifest.Manifest, p nix.Path) *nix.PathInfo {
	i, ok := slices.BinarySearchFunc(m.Paths, p, func(pi *nix.PathInfo, p nix.Path) int { return pi.Path.Compare(p) })
	if !ok {
		return nil
	}
	return m.Paths[i]
}
