package bundle

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/trust"
)

// CreateReport says what went into a bundle.
type CreateReport struct {
	Paths     int      `json:"paths"`
	NarBytes  uint64   `json:"narBytes"`
	Manifests []string `json:"manifests"` // NAME@N
	// Unvouched are paths that no included manifest lists, that carry no
	// signature and are not content-addressed: an importer refuses them
	// unless it passes --no-check-sigs.
	Unvouched []string `json:"unvouched,omitempty"`
}

// contents is what a bundle will hold.
type contents struct {
	manifests [][]byte
	names     []string
	infos     []*nix.PathInfo // references first
	listed    *trust.Trust    // vouched for by the manifests, no keys
}

// resolve turns refs into manifests and the closure to write. A ref that
// parses as a store path (/nix/store/<hash>-<name>, a path below one, or a
// bare <hash>-<name>) is one; anything else is NAME or NAME@N, whose
// manifest is taken from h and whose closure is included.
func resolve(s Source, h *manifest.History, refs []string) (*contents, error) {
	if len(refs) == 0 {
		return nil, errors.New("nothing to bundle: give store paths or configuration names")
	}
	c := &contents{listed: trust.New(s.StoreDir(), nil)}
	var roots []nix.Path
	var ms []*manifest.Manifest
	seen := map[string]bool{}
	for _, ref := range refs {
		if p, err := nix.ParsePathLoose(s.StoreDir(), ref); err == nil {
			roots = append(roots, p)
			continue
		}
		name, gen, err := manifest.ParseRef(ref)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a store path nor a configuration NAME[@N]: %w", ref, err)
		}
		if h == nil {
			return nil, fmt.Errorf("%s: no manifest history to take it from", ref)
		}
		m, b, err := h.Get(name, gen)
		if err != nil {
			return nil, err
		}
		if seen[string(b)] {
			continue
		}
		seen[string(b)] = true
		ref = fmt.Sprintf("%s@%d", m.Name, m.Generation)
		for _, pi := range m.Paths {
			if ok, err := s.IsValid(pi.Path); err != nil {
				return nil, err
			} else if !ok {
				return nil, fmt.Errorf("%s: its closure is not all in this store (%s is missing); fetch it first with `trove sync %s`", ref, pi.Path.Abs(s.StoreDir()), ref)
			}
		}
		c.manifests = append(c.manifests, b)
		c.names = append(c.names, ref)
		ms = append(ms, m)
		for _, pi := range m.Paths { // the root's closure, and anything else it lists
			roots = append(roots, pi.Path)
			c.listed.VouchFor(pi, ref)
		}
	}
	var err error
	if c.infos, err = s.Closure(roots...); err != nil {
		return nil, fmt.Errorf("%w; add or fetch it first", err)
	}
	// The store's infos must be the ones the manifests sign, or the
	// importer would refuse the bundle: ask its question of them as the
	// bundle carries them, without a chunk index.
	have := make(map[nix.PathHash]*nix.PathInfo, len(c.infos))
	for _, pi := range c.infos {
		have[pi.Path.Hash] = pi
	}
	for i, m := range ms {
		for _, v := range m.Paths {
			pi := have[v.Path.Hash]
			if pi == nil {
				return nil, fmt.Errorf("%s: this store does not hold %s; the bundle would be refused", c.names[i], v.Path.Abs(s.StoreDir()))
			}
			bundled := *pi
			bundled.ChunkIndex = chunk.ID{}
			if err := c.listed.Believe(&bundled); err != nil {
				return nil, fmt.Errorf("%s: this store's %s differs from what the manifest signed; the bundle would be refused: %w", c.names[i], v.Path.Abs(s.StoreDir()), err)
			}
		}
	}
	return c, nil
}

// unvouched lists the infos that no manifest lists, without signatures or a
// content address.
func (c *contents) unvouched(storeDir string) []string {
	var out []string
	for _, pi := range c.infos {
		if len(c.listed.Vouchers(pi.Path.Hash)) == 0 && len(pi.Sigs) == 0 && !pi.ContentAddressed(storeDir) {
			out = append(out, pi.Path.Abs(storeDir))
		}
	}
	return out
}

// Create writes a bundle of refs to w: configuration names (NAME[@N], from
// h, with their signed manifests) and store paths, each with its whole
// closure, references first. Every NAR is checked against its narHash as
// it is written, so a damaged tree fails here rather than on the offline
// machine.
func Create(ctx context.Context, w io.Writer, s Source, h *manifest.History, refs []string) (*CreateReport, error) {
	c, err := resolve(s, h, refs)
	if err != nil {
		return nil, err
	}
	hd, err := encodeHead(s.StoreDir(), c.manifests, c.infos)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(hd); err != nil {
		return nil, err
	}
	rep := &CreateReport{Manifests: c.names, Unvouched: c.unvouched(s.StoreDir())}
	if rep.Manifests == nil {
		rep.Manifests = []string{}
	}
	for _, pi := range c.infos {
		if _, err := bw.Write(appendU64(nil, pi.NarSize)); err != nil {
			return nil, err
		}
		if err := writeNAR(ctx, bw, s, pi); err != nil {
			return nil, err
		}
		rep.Paths++
		rep.NarBytes += pi.NarSize
	}
	if _, err := bw.WriteString(trailer); err != nil {
		return nil, err
	}
	return rep, bw.Flush()
}

// CreateNixExport writes the closure of refs (as for Create) in the format
// of `nix-store --export`, which `nix-store --import` reads: for each path,
// references first, u64 1, the NAR, u64 0x4558494e ("NIXE"), the path, its
// references and its deriver (or "") as Nix strings, u64 0; then u64 0.
// The format has no signatures and no manifests: Nix's import trusts the
// file (and needs the references valid first).
func CreateNixExport(ctx context.Context, w io.Writer, s Source, h *manifest.History, refs []string) (*CreateReport, error) {
	c, err := resolve(s, h, refs)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	rep := &CreateReport{Manifests: []string{}}
	dir := s.StoreDir()
	for _, pi := range c.infos {
		if _, err := bw.Write(appendU64(nil, 1)); err != nil {
			return nil, err
		}
		if err := writeNAR(ctx, bw, s, pi); err != nil {
			return nil, err
		}
		b := appendU64(nil, exportMagic)
		b = appendNixStr(b, pi.Path.Abs(dir))
		b = appendU64(b, uint64(len(pi.References)))
		for _, r := range pi.References {
			b = appendNixStr(b, r.Abs(dir))
		}
		deriver := ""
		if !pi.Deriver.IsZero() {
			deriver = pi.Deriver.Abs(dir)
		}
		b = appendNixStr(b, deriver)
		b = appendU64(b, 0) // no legacy signature
		if _, err := bw.Write(b); err != nil {
			return nil, err
		}
		rep.Paths++
		rep.NarBytes += pi.NarSize
	}
	if _, err := bw.Write(appendU64(nil, 0)); err != nil {
		return nil, err
	}
	return rep, bw.Flush()
}

// exportMagic follows each NAR in `nix-store --export` output.
const exportMagic = 0x4558494e

// appendNixStr appends a string as Nix serialises one: u64 length, bytes,
// zero padding to a multiple of 8.
func appendNixStr(b []byte, s string) []byte {
	b = appendU64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, (8-len(s)%8)%8)...)
}

// writeNAR writes pi's NAR from the store, checking it against pi.
func writeNAR(ctx context.Context, w io.Writer, s Source, pi *nix.PathInfo) error {
	hw := &hashWriter{w: w, h: sha256.New()}
	if err := s.WriteNAR(ctx, hw, pi.Path, 0, -1); err != nil {
		return fmt.Errorf("writing the NAR of %s: %w", pi.Path.Abs(s.StoreDir()), err)
	}
	var got nix.Hash
	copy(got[:], hw.h.Sum(nil))
	if got != pi.NarHash || hw.n != pi.NarSize {
		return fmt.Errorf("%s: its tree no longer matches its narHash (%s, %d bytes, instead of %s, %d bytes); run `trove verify --all`",
			pi.Path.Abs(s.StoreDir()), got, hw.n, pi.NarHash, pi.NarSize)
	}
	return nil
}

type hashWriter struct {
	w io.Writer
	h hash.Hash
	n uint64
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += uint64(n)
	return n, err
}
