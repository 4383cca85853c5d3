package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
)

// FileConfig is $TROVE_HOME/config.toml. Command-line flags override it.
//
//	[agent]
//	listen = ["/ip4/0.0.0.0/tcp/4807"]
//	peers = ["/ip4/192.168.1.7/tcp/4807/p2p/12D3Koo..."]
//	mdns = true
//	dht = false
//	bootstrap = []
//	serve = "trusted"     # or "public"
//	log_format = "text"   # or "json"
//	timeout = "10m"       # for every activation command (follow, activate, rollback)
type FileConfig struct {
	// Store is the store every command of this home works on: "embedded"
	// (trove's own) or "nix" (the machine's Nix store); NixStore names
	// another Nix store than the machine's ("local?root=DIR").
	Store    string       `toml:"store"`
	NixStore string       `toml:"nix_store"`
	Agent    AgentSection `toml:"agent"`
}

// AgentSection is the [agent] table. Pointers distinguish "unset" from false.
type AgentSection struct {
	Listen    []string `toml:"listen"`
	Peers     []string `toml:"peers"`
	MDNS      *bool    `toml:"mdns"`
	DHT       *bool    `toml:"dht"`
	Bootstrap []string `toml:"bootstrap"`
	// Relays are members running --relay-service that this agent keeps a
	// reservation on, so members behind other NATs can reach it.
	Relays       []string `toml:"relays"`
	RelayService *bool    `toml:"relay_service"`
	Serve        string   `toml:"serve"`
	LogFormat    string   `toml:"log_format"`
	Timeout      string   `toml:"timeout"`
}

// ActivationTimeout is how long an activation command may run: timeout,
// or profile.DefaultActivationTimeout.
func (s AgentSection) ActivationTimeout() time.Duration {
	if d, err := parseTimeout(s.Timeout); err == nil && d > 0 {
		return d
	}
	return profile.DefaultActivationTimeout
}

// parseTimeout parses a timeout setting: a Go duration ("90s", "10m")
// above zero, or "" for the default (0).
func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("timeout %q: want a duration above zero such as \"90s\" or \"10m\"", s)
	}
	return d, nil
}

// ConfigPath is where the config file lives in a home.
func ConfigPath(home string) string { return filepath.Join(home, "config.toml") }

// LoadConfig reads config.toml; a missing file is an empty config.
func LoadConfig(home string) (*FileConfig, error) {
	return loadFile(ConfigPath(home), &FileConfig{}, ParseConfig)
}

// loadFile parses the file at path, or returns missing if there is none.
// A parse error names the file.
func loadFile[T any](path string, missing T, parse func([]byte) (T, error)) (T, error) {
	var zero T
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return missing, nil
	}
	if err != nil {
		return zero, err
	}
	v, err := parse(b)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// ParseConfig parses config.toml strictly: unknown keys and bad values are
// errors, so a typo does not silently fall back to a default.
func ParseConfig(b []byte) (*FileConfig, error) {
	var c FileConfig
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown setting %s (known: store, nix_store, agent.listen, agent.peers, agent.mdns, agent.dht, agent.bootstrap, agent.serve, agent.log_format, agent.timeout)", strings.Join(keys, ", "))
	}
	if _, err := store.ParseKind(c.Store, c.NixStore); err != nil {
		return nil, err
	}
	switch c.Agent.Serve {
	case "", "trusted", "public":
	default:
		return nil, fmt.Errorf("agent.serve = %q: want \"trusted\" or \"public\"", c.Agent.Serve)
	}
	switch c.Agent.LogFormat {
	case "", "text", "json":
	default:
		return nil, fmt.Errorf("agent.log_format = %q: want \"text\" or \"json\"", c.Agent.LogFormat)
	}
	if _, err := parseTimeout(c.Agent.Timeout); err != nil {
		return nil, fmt.Errorf("agent.%w", err)
	}
	return &c, nil
}

// Settings are an agent's network and logging settings: the command
// line's over config.toml's over the defaults (DefaultSettings), merged
// in one place for `trove agent` and for the short-lived node a command
// starts when no agent runs.
type Settings struct {
	Listen       []string
	Peers        []string // kept connected: the flags' and config.toml's
	MDNS         bool
	DHT          bool
	Bootstrap    []string
	Relays       []string // members relaying for the group: the flags' and config.toml's
	RelayService bool
	Serve        string // "trusted" or "public"
	LogFormat    string // "", "text" or "json"
}

// DefaultSettings are the settings with no flags and no config.toml.
func DefaultSettings() Settings {
	return Settings{Listen: p2p.DefaultListen, MDNS: true, Serve: "trusted"}
}

// Merge returns flags over the file's settings: a setting the command
// line set (set(name) is true for the flag name) wins; otherwise the
// file's, when it has one. Peers and bootstrap peers add up.
func (fc *FileConfig) Merge(flags Settings, set func(flag string) bool) (Settings, error) {
	s, a := flags, fc.Agent
	if !set("listen") && len(a.Listen) > 0 {
		s.Listen = a.Listen
	}
	s.Peers = append(slices.Clone(flags.Peers), a.Peers...)
	s.Bootstrap = append(slices.Clone(flags.Bootstrap), a.Bootstrap...)
	s.Relays = append(slices.Clone(flags.Relays), a.Relays...)
	if !set("relay-service") && a.RelayService != nil {
		s.RelayService = *a.RelayService
	}
	if !set("mdns") && a.MDNS != nil {
		s.MDNS = *a.MDNS
	}
	if !set("dht") && a.DHT != nil {
		s.DHT = *a.DHT
	}
	if !set("serve") && a.Serve != "" {
		s.Serve = a.Serve
	}
	if !set("log-format") && a.LogFormat != "" {
		s.LogFormat = a.LogFormat
	}
	if s.Serve != "trusted" && s.Serve != "public" {
		return s, fmt.Errorf("--serve %q: want trusted or public", s.Serve)
	}
	return s, nil
}
