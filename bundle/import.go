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
	"github.com/trove-p2p/trove/trust"
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

// Import reads a bundle from r and makes its paths valid in s, verifying
// everything as doc.go describes: every path info is believed (through a
// trusted manifest in the bundle, a trusted signature or its content
// address) before the first NAR is read, each NAR is checked against its
// believed narHash as it is unpacked, and the manifests are recorded in h
// only once every NAR has been added. keys decides trust; h may be nil for
// a bundle without manifests. On error the report says what was added
// before it: complete, verified paths, each with its closure.
func Import(ctx context.Context, r io.Reader, s Target, keys *manifest.Keyring, h *manifest.History, opts ImportOptions) (*Report, error) {
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
	belief := trust.New(s.StoreDir(), keys)
	belief.BelieveAll = opts.NoCheckSigs
	var trusted []int
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
		if err := belief.Vouch(m); err != nil {
			return rep, err // checkManifest passed: the keyring changed meanwhile
		}
		trusted = append(trusted, i)
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
		if err := belief.Believe(pi); err != nil {
			problems = append(problems, believeHint(err))
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
		for _, v := range belief.Vouchers(pi.Path.Hash) {
			if v.Info.ChunkIndex != got.ChunkIndex {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: its chunk index here differs from the one in %s (a different trove version chunked it): peers syncing that manifest will not take it from this machine",
					pi.Path.Abs(s.StoreDir()), v.From))
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
		return fmt.Errorf("%s: %w: no trusted keys", ref, trust.ErrUntrusted)
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

// believeHint adds to why a bundle's path is not believed what to do
// about it here.
func believeHint(err error) error {
	var ue *trust.UntrustedError
	if errors.As(err, &ue) && ue.Reason == trust.NoSignature {
		return fmt.Errorf("%w; or bundle a published configuration (trove bundle create NAME)", err)
	}
	return err
}
