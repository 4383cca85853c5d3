package nixdaemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// IsValidPath reports whether p is valid in the daemon's store.
func (c *Client) IsValidPath(ctx context.Context, p nix.Path) (bool, error) {
	var ok bool
	err := c.do(ctx, "IsValidPath", func() (err error) {
		ok, err = c.isValid(p)
		return err
	})
	return ok, err
}

func (c *Client) isValid(p nix.Path) (bool, error) {
	c.w.u64(opIsValidPath)
	c.w.str(p.Abs(c.storeDir))
	if err := c.exchange("IsValidPath"); err != nil {
		return false, err
	}
	return c.r.bool()
}

// exchange sends the request written so far and reads the log stream
// that precedes the reply.
func (c *Client) exchange(op string) error {
	if err := c.w.flush(); err != nil {
		return err
	}
	return c.stderr(op, nil)
}

// QueryValidPaths returns those of ps that are valid, without
// substituting any.
func (c *Client) QueryValidPaths(ctx context.Context, ps []nix.Path) ([]nix.Path, error) {
	var valid []nix.Path
	err := c.do(ctx, "QueryValidPaths", func() (err error) {
		c.w.u64(opQueryValidPaths)
		c.w.strs(c.abs(ps))
		if c.minor >= 27 {
			c.w.bool(false) // substitute
		}
		if err := c.exchange("QueryValidPaths"); err != nil {
			return err
		}
		valid, err = c.r.paths(c.storeDir, len(ps))
		return err
	})
	return valid, err
}

func (c *Client) abs(ps []nix.Path) []string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.Abs(c.storeDir)
	}
	return ss
}

// QueryAllValidPaths returns every valid path in the daemon's store.
func (c *Client) QueryAllValidPaths(ctx context.Context) ([]nix.Path, error) {
	var all []nix.Path
	err := c.do(ctx, "QueryAllValidPaths", func() (err error) {
		c.w.u64(opQueryAllValidPaths)
		if err := c.exchange("QueryAllValidPaths"); err != nil {
			return err
		}
		all, err = c.r.paths(c.storeDir, maxList)
		return err
	})
	return all, err
}

// QueryPathInfo returns what the daemon knows about p, or an error
// wrapping nix.ErrNotValid when p is not valid. References are sorted.
func (c *Client) QueryPathInfo(ctx context.Context, p nix.Path) (*nix.PathInfo, error) {
	var pi *nix.PathInfo
	err := c.do(ctx, "QueryPathInfo", func() (err error) {
		pi, err = c.pathInfo(p)
		return err
	})
	return pi, err
}

func (c *Client) pathInfo(p nix.Path) (*nix.PathInfo, error) {
	c.w.u64(opQueryPathInfo)
	c.w.str(p.Abs(c.storeDir))
	if err := c.exchange("QueryPathInfo"); err != nil {
		return nil, err
	}
	valid, err := c.r.bool() // protocol >= 1.17
	if err != nil {
		return nil, err
	}
	if !valid {
		return nil, fmt.Errorf("%s: %w", p.Abs(c.storeDir), nix.ErrNotValid)
	}
	return c.readPathInfo(p)
}

// readPathInfo reads ValidPathInfo as the daemon writes it without its
// path: deriver, narHash (base16, no type), references, registration
// time, narSize, ultimate, sigs, CA.
func (c *Client) readPathInfo(p nix.Path) (*nix.PathInfo, error) {
	r := &c.r
	pi := &nix.PathInfo{Path: p}
	var err error
	if pi.Deriver, err = r.path(c.storeDir, true); err != nil {
		return nil, err
	}
	h, err := r.str(maxStr)
	if err != nil {
		return nil, err
	}
	if pi.NarHash, err = parseHash(h); err != nil {
		return nil, r.bad("narHash: %v", err)
	}
	if pi.References, err = r.paths(c.storeDir, maxList); err != nil {
		return nil, err
	}
	pi.References = nix.SortRefs(pi.References)
	t, err := r.u64()
	if err != nil {
		return nil, err
	}
	if t != 0 {
		pi.RegistrationTime = time.Unix(int64(t), 0)
	}
	if pi.NarSize, err = r.u64(); err != nil {
		return nil, err
	}
	if pi.Ultimate, err = r.bool(); err != nil {
		return nil, err
	}
	if pi.Sigs, err = r.strs(maxList); err != nil {
		return nil, err
	}
	if pi.CA, err = r.str(maxStr); err != nil {
		return nil, err
	}
	return pi, nil
}

// parseHash reads a SHA-256 hash as Nix's Hash::parseAny does with a
// default type: bare base16 (what the daemon sends), or typed.
func parseHash(s string) (nix.Hash, error) {
	if !strings.HasPrefix(s, "sha256:") && !strings.HasPrefix(s, "sha256-") {
		s = "sha256:" + s
	}
	return nix.ParseHash(s)
}

// QueryPathFromHashPart returns the valid path whose hash is h, or an
// error wrapping nix.ErrNotValid when there is none.
func (c *Client) QueryPathFromHashPart(ctx context.Context, h nix.PathHash) (nix.Path, error) {
	var p nix.Path
	err := c.do(ctx, "QueryPathFromHashPart", func() (err error) {
		c.w.u64(opQueryPathFromHashPart)
		c.w.str(h.String())
		if err := c.exchange("QueryPathFromHashPart"); err != nil {
			return err
		}
		if p, err = c.r.path(c.storeDir, true); err != nil {
			return err
		}
		if p.IsZero() {
			return fmt.Errorf("no path with hash %s: %w", h, nix.ErrNotValid)
		}
		if p.Hash != h {
			return c.r.bad("asked for hash %s, got %s", h, p)
		}
		return nil
	})
	return p, err
}

// AddTempRoot keeps p from garbage collection while the connection lasts.
func (c *Client) AddTempRoot(ctx context.Context, p nix.Path) error {
	return c.do(ctx, "AddTempRoot", func() error {
		c.w.u64(opAddTempRoot)
		c.w.str(p.Abs(c.storeDir))
		return c.ack("AddTempRoot")
	})
}

// AddIndirectRoot registers link, a symlink to a store path, as a garbage
// collector root: the path stays alive while the link points at it. A
// relative link is made absolute here, not in the daemon's directory.
func (c *Client) AddIndirectRoot(ctx context.Context, link string) error {
	abs, err := filepath.Abs(link)
	if err != nil {
		return err
	}
	return c.do(ctx, "AddIndirectRoot", func() error {
		c.w.u64(opAddIndirectRoot)
		c.w.str(abs)
		return c.ack("AddIndirectRoot")
	})
}

// ack finishes an operation the daemon answers with the number 1.
func (c *Client) ack(op string) error {
	if err := c.exchange(op); err != nil {
		return err
	}
	n, err := c.r.u64()
	if err == nil && n != 1 {
		return c.r.bad("%s answered %d, not 1", op, n)
	}
	return err
}
