package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
)

// CacheConfig configures the agent's Nix binary-cache endpoint.
type CacheConfig struct {
	// Listen is the TCP address (HOST:PORT) to serve on; empty turns the
	// endpoint off. Anyone who can reach it can read every path in the
	// store, so it belongs on loopback unless the store holds nothing secret.
	Listen string
	// FromPeers fetches what Nix asks for and the store lacks from peers,
	// believing only what the agent's trusted keys vouch for.
	FromPeers bool
	// Key signs every narinfo served; nil serves the paths' own signatures
	// only.
	Key *manifest.SecretKey
	// Timeout bounds the search among peers for a missing path before the
	// answer is 404 (default nixcache.DefaultTimeout).
	Timeout time.Duration
}

// startCache serves the binary-cache protocol until ctx ends.
func (a *Agent) startCache(ctx context.Context) error {
	cc := a.cfg.Cache
	if cc.Listen == "" {
		return nil
	}
	log := a.log.With("component", "nixcache")
	var src nixcache.Source
	if cc.FromPeers {
		src = newPeerSource(a.Store, a.Node, a.Keys, log)
	}
	h, err := nixcache.New(ctx, nixcache.Config{Store: a.Store, Key: cc.Key, Source: src, Timeout: cc.Timeout, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cc.Listen)
	if err != nil {
		return fmt.Errorf("binary cache: cannot listen on %s: %w", cc.Listen, err)
	}
	a.cache = ln
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("binary cache stopped", "err", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // NAR downloads still running: cut them
		}
	}()
	key := ""
	if cc.Key != nil {
		key = cc.Key.Public().String()
	}
	log.Info("serving the Nix binary-cache protocol", "url", "http://"+ln.Addr().String(), "fromPeers", cc.FromPeers, "publicKey", key)
	return nil
}

// CacheAddr is the address of the binary-cache endpoint, or nil when it is
// off.
func (a *Agent) CacheAddr() net.Addr {
	if a.cache == nil {
		return nil
	}
	return a.cache.Addr()
}
