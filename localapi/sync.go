package localapi

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/trove-p2p/trove/fetch"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// SyncRequest names store paths and configurations (NAME or NAME@N) to
// fetch, and peers to fetch from besides the known ones.
type SyncRequest struct {
	Paths       []string `json:"paths"`
	Configs     []string `json:"configs"`
	From        []string `json:"from"` // multiaddrs ending in /p2p/<id>
	NoCheckSigs bool     `json:"noCheckSigs,omitempty"`
	// Compress is auto (the default), always or never: when chunks are
	// asked for zstd-compressed.
	Compress string `json:"compress,omitempty"`
}

func doSync(ctx context.Context, e *Env, req SyncRequest, ev func(Event)) (*fetch.Report, error) {
	froms, err := agent.ParsePeerAddrs(req.From)
	if err != nil {
		return nil, &UsageError{err}
	}
	compress, err := fetch.ParseCompress(req.Compress)
	if err != nil {
		return nil, &UsageError{err}
	}
	_, paths, err := e.storePaths(req.Paths)
	if err != nil {
		return nil, err
	}
	s, keys, h, err := e.trusted()
	if err != nil {
		return nil, err
	}
	var n *p2p.Node
	if ag := e.agent; ag != nil {
		for _, ai := range froms {
			if err := ag.Node.Connect(ctx, ai); err != nil {
				return nil, fmt.Errorf("cannot reach %s: %w", ai.ID, err)
			}
		}
		defer ag.BeginTransfer()()
		n = ag.Node
	} else {
		if n, err = shortLivedNode(ctx, s, froms, e.Log, ev); err != nil {
			return nil, err
		}
		defer n.Close()
	}
	opts := fetch.Options{Keys: keys, NoCheckSigs: req.NoCheckSigs, Logger: e.Log, Compress: compress,
		Progress: func(p fetch.Progress) { ev(Event{Progress: &p}) }}
	if len(req.Configs) > 0 {
		vouched := map[nix.PathHash]*nix.PathInfo{}
		for _, ref := range req.Configs {
			name, gen, err := manifest.ParseRef(ref)
			if err != nil {
				return nil, &UsageError{err}
			}
			m, err := fetch.ResolveManifest(ctx, n, h, name, gen)
			if err != nil {
				return nil, err
			}
			ev(Event{Resolved: &Resolved{Name: name, Generation: m.Generation, Paths: len(m.Paths), Publisher: m.Publisher.Name}})
			for k, v := range m.Vouched() {
				vouched[k] = v
			}
			paths = append(paths, m.Root)
		}
		opts.Vouched = vouched
	}
	// Until the sync ends; then, as after `nix copy`, what it delivered
	// stays Nix's to collect once nothing roots it.
	defer s.Hold()()
	return fetch.New(s, n, opts).Fetch(ctx, paths)
}

// fileSettings are the settings an agent of home would have with no
// flags: config.toml's over the defaults.
func fileSettings(home string) (agent.Settings, error) {
	fc, err := agent.LoadConfig(home)
	if err != nil {
		return agent.Settings{}, err
	}
	return fc.Merge(agent.DefaultSettings(), func(string) bool { return false })
}

// shortLivedNode starts a node for a command that runs without an agent:
// this home's identity and trust group, listening on ephemeral ports,
// connected to froms and to config.toml's peers (with the settings an
// agent would use: agent.FileConfig.Merge), and, when none answers, given
// a moment to find a trusted peer on the LAN. Peers it cannot reach are
// told to ev as Unreachable events.
func shortLivedNode(ctx context.Context, s *store.Store, froms []peer.AddrInfo, log *slog.Logger, ev func(Event)) (*p2p.Node, error) {
	home := s.Home()
	set, err := fileSettings(home)
	if err != nil {
		return nil, err
	}
	statics, err := agent.ParsePeerAddrs(set.Peers)
	if err != nil {
		return nil, err
	}
	trust, err := agent.LoadTrust(home)
	if err != nil {
		return nil, err
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(home, "keys"))
	if err != nil {
		return nil, err
	}
	n, err := p2p.New(ctx, p2p.Config{
		Key: key, Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		Trust: trust, Content: p2p.StoreContent{Store: s}, MDNS: set.MDNS, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	dialed := 0
	for _, ai := range append(froms, statics...) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.Connect(cctx, ai)
		cancel()
		if err != nil {
			ev(Event{Unreachable: &Unreachable{Peer: ai.ID.String(), Error: err.Error()}})
			continue
		}
		dialed++
	}
	if dialed == 0 && set.MDNS {
		// Give LAN discovery a moment to find a trusted peer.
		deadline := time.Now().Add(3 * time.Second)
		for len(n.ConnectedPeers()) == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(n.ConnectedPeers()) == 0 {
		n.Close()
		return nil, fmt.Errorf("no peers to fetch from: give one with --from MULTIADDR, add peers to config.toml, or run `trove agent`")
	}
	return n, nil
}
