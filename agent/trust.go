package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/p2p"
)

// The trust group lives in $TROVE_HOME/peers.json, written atomically. It
// is small, edited by people through `trove peer`, and read before the store
// opens, so it is a file rather than a Badger record.

type trustFile struct {
	Peers []trustEntry `json:"peers"`
}

type trustEntry struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// TrustPath is the trust group file of a home.
func TrustPath(home string) string { return filepath.Join(home, "peers.json") }

// LoadTrust reads the trust group; a missing file is an empty group.
func LoadTrust(home string) (*p2p.TrustGroup, error) {
	return loadFile(TrustPath(home), p2p.NewTrustGroup(nil), parseTrust)
}

func parseTrust(b []byte) (*p2p.TrustGroup, error) {
	var f trustFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	m := map[peer.ID]string{}
	for _, e := range f.Peers {
		id, err := peer.Decode(e.ID)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", e.ID, err)
		}
		m[id] = e.Name
	}
	return p2p.NewTrustGroup(m), nil
}

// SaveTrust writes the trust group atomically.
func SaveTrust(home string, g *p2p.TrustGroup) error {
	var f trustFile
	for id, name := range g.Peers() {
		f.Peers = append(f.Peers, trustEntry{ID: id.String(), Name: name})
	}
	slices.SortFunc(f.Peers, func(a, b trustEntry) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	tmp := TrustPath(home) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, TrustPath(home))
}
