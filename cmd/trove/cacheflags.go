package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nixcache"
)

// cacheFlags are trove agent's flags for the Nix binary-cache endpoint.
type cacheFlags struct {
	listen    string
	fromPeers bool
	key       string
	timeout   time.Duration
}

func (c *cacheFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.listen, "cache-listen", "", "serve the Nix binary-cache protocol on `HOST:PORT` (e.g. 127.0.0.1:4808);\nanyone who can reach it can read the whole store")
	f.BoolVar(&c.fromPeers, "cache-from-peers", false, "fetch paths the cache is asked for and lacks from peers")
	f.StringVar(&c.key, "cache-key", "", "sign narinfos with $TROVE_HOME/keys/`NAME`.secret (default: the only key there)")
	f.DurationVar(&c.timeout, "cache-timeout", nixcache.DefaultTimeout, "how long to look among peers for a missing path before answering 404")
}

// config checks the flags and loads the signing key.
func (c *cacheFlags) config(cmd *cobra.Command, home string, log *slog.Logger) (agent.CacheConfig, error) {
	f := cmd.Flags()
	if c.listen == "" {
		for _, name := range []string{"cache-from-peers", "cache-key", "cache-timeout"} {
			if f.Changed(name) {
				return agent.CacheConfig{}, usagef("--%s needs --cache-listen HOST:PORT", name)
			}
		}
		return agent.CacheConfig{}, nil
	}
	host, _, err := net.SplitHostPort(c.listen)
	if err != nil {
		return agent.CacheConfig{}, usagef("--cache-listen %q: want HOST:PORT, such as 127.0.0.1:4808", c.listen)
	}
	if c.timeout <= 0 {
		return agent.CacheConfig{}, usagef("--cache-timeout %s: want a positive duration, such as 5s", c.timeout)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Warn("the binary cache is reachable beyond this machine: anyone who reaches it can read every path in the store", "addr", c.listen)
	}
	cc := agent.CacheConfig{Listen: c.listen, FromPeers: c.fromPeers, Timeout: c.timeout}
	if c.key == "" {
		matches, _ := filepath.Glob(filepath.Join(home, "keys", "*.secret"))
		switch len(matches) {
		case 0:
			log.Warn("no signing key: narinfos carry only the paths' own signatures; make one with `trove key generate NAME` for Nix to trust this cache")
			return cc, nil
		case 1:
		default:
			return cc, fmt.Errorf("%d signing keys in %s: choose the cache's with --cache-key NAME", len(matches), filepath.Join(home, "keys"))
		}
	}
	key, err := manifest.LoadSigningKey(manifest.KeysDir(home), c.key)
	if err != nil {
		return cc, err
	}
	cc.Key = &key
	return cc, nil
}
