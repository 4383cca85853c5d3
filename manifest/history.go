package manifest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// History keeps the manifests this machine knows, one file per generation
// under <home>/manifests/<name>/<generation>.manifest. Only manifests that
// decode, verify, and carry a signature from a key trusted for their name
// get in, and a generation already known is never replaced by a different
// manifest. An older generation not known yet gets in (someone asked for
// it: trove sync NAME@N), but the newest never goes down, and automatic
// following acts only on the newest, so a peer cannot downgrade a follower.
type History struct {
	dir   string
	keys  *Keyring
	mu    sync.Mutex // serialises additions; guards onNew
	onNew func(*Manifest)
}

// ManifestsDir is where a home keeps manifests.
func ManifestsDir(home string) string { return filepath.Join(home, "manifests") }

// OpenHistory opens the history of a home.
func OpenHistory(home string, keys *Keyring) *History {
	return &History{dir: ManifestsDir(home), keys: keys}
}

// ErrStale means a manifest is not newer than what is already known.
var ErrStale = errors.New("not newer than the newest known generation")

// ErrConflict means a different manifest of the same generation is known.
var ErrConflict = errors.New("a different manifest of this generation is already known here")

// Add verifies and stores an encoded manifest. It returns the manifest and
// whether it was new.
func (h *History) Add(b []byte) (*Manifest, bool, error) {
	return h.add(b, nil)
}

// ErrUnasked refuses a peer's answer that is not what was asked for.
var ErrUnasked = errors.New("not the manifest that was asked for")

// errBehind marks an answer for the newest generation that is older than
// the newest known here: the peer is behind; nothing is recorded.
var errBehind = errors.New("behind")

// AddAnswer is Add for a peer's answer to a request for generation gen
// (0: the newest) of name. It refuses a manifest of another name or
// generation, and ignores (nil, false, nil) a newest one older than the
// newest known here, so that a peer cannot fill the history with old
// generations nobody asked for.
func (h *History) AddAnswer(b []byte, name string, gen uint64) (*Manifest, bool, error) {
	m, isNew, err := h.add(b, func(m *Manifest) error {
		newest, err := h.newestGen(name)
		switch {
		case err != nil:
			return err
		case m.Name != name:
			return fmt.Errorf("%w: %s@%d, when %s was asked for", ErrUnasked, m.Name, m.Generation, name)
		case gen != 0 && m.Generation != gen:
			return fmt.Errorf("%w: %s@%d, when %s@%d was asked for", ErrUnasked, m.Name, m.Generation, name, gen)
		case gen == 0 && m.Generation < newest:
			return errBehind
		}
		return nil
	})
	if errors.Is(err, errBehind) {
		return nil, false, nil
	}
	return m, isNew, err
}

// OnNew sets fn to be called with every manifest the history records as
// new (after it is recorded, by the goroutine that added it).
func (h *History) OnNew(fn func(*Manifest)) {
	h.mu.Lock()
	h.onNew = fn
	h.mu.Unlock()
}

func (h *History) add(b []byte, check func(*Manifest) error) (*Manifest, bool, error) {
	m, err := Decode(b)
	if err != nil {
		return nil, false, err
	}
	if err := h.keys.VerifyManifest(m); err != nil {
		return nil, false, err
	}
	isNew, onNew, err := h.store(m, b, check)
	if err != nil {
		return nil, false, err
	}
	if isNew && onNew != nil {
		onNew(m)
	}
	return m, isNew, nil
}

// store writes m (encoded as b) unless check refuses it or it is known.
func (h *History) store(m *Manifest, b []byte, check func(*Manifest) error) (isNew bool, onNew func(*Manifest), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if check != nil {
		if err := check(m); err != nil {
			return false, nil, err
		}
	}
	file := h.file(m.Name, m.Generation)
	old, err := os.ReadFile(file)
	switch {
	case err == nil && string(old) == string(b):
		return false, nil, nil // the same manifest again
	case err == nil:
		return false, nil, fmt.Errorf("%s generation %d: %w (signed by %s)", m.Name, m.Generation, ErrConflict, m.Publisher.Name)
	case !errors.Is(err, os.ErrNotExist):
		return false, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return false, nil, err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return false, nil, err
	}
	if err := os.Rename(tmp, file); err != nil {
		return false, nil, err
	}
	return true, h.onNew, nil
}

func (h *History) file(name string, gen uint64) string {
	return filepath.Join(h.dir, name, strconv.FormatUint(gen, 10)+".manifest")
}

// entries lists dir: none if it does not exist yet.
func entries(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

// Generations lists the generation numbers known for name, ascending.
func (h *History) Generations(name string) ([]uint64, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	ents, err := entries(filepath.Join(h.dir, name))
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		s, ok := strings.CutSuffix(e.Name(), ".manifest")
		if !ok {
			continue
		}
		if g, err := strconv.ParseUint(s, 10, 64); err == nil && g > 0 {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (h *History) newestGen(name string) (uint64, error) {
	gens, err := h.Generations(name)
	if err != nil || len(gens) == 0 {
		return 0, err
	}
	return gens[len(gens)-1], nil
}

// ErrUnknown means no such manifest is known here.
var ErrUnknown = errors.New("no such configuration generation is known here")

// Get returns generation gen of name (0 = the newest), verified again.
func (h *History) Get(name string, gen uint64) (*Manifest, []byte, error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	if gen == 0 {
		g, err := h.newestGen(name)
		if err != nil {
			return nil, nil, err
		}
		if g == 0 {
			return nil, nil, fmt.Errorf("%s: %w", name, ErrUnknown)
		}
		gen = g
	}
	b, err := os.ReadFile(h.file(name, gen))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s@%d: %w", name, gen, ErrUnknown)
	}
	if err != nil {
		return nil, nil, err
	}
	m, err := Decode(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", h.file(name, gen), err)
	}
	return m, b, nil
}

// Names lists the configurations with at least one known generation.
func (h *History) Names() ([]string, error) {
	ents, err := entries(h.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && CheckName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// ParseRef parses NAME or NAME@N (N ≥ 1); gen 0 means the newest.
func ParseRef(s string) (name string, gen uint64, err error) {
	name, g, ok := strings.Cut(s, "@")
	if err := CheckName(name); err != nil {
		return "", 0, err
	}
	if ok {
		gen, err = strconv.ParseUint(g, 10, 64)
		if err != nil || gen == 0 {
			return "", 0, fmt.Errorf("%q: the generation after @ must be a number from 1", s)
		}
	}
	return name, gen, nil
}
