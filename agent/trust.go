package agent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/p2p"
)

// The trust group lives in $TROVE_HOME/peers.json, written atomically. It
// is small, edited by people through `trove peer` and `trove group`, and
// read before the store opens, so it is a file rather than a Badger
// record. "peers" is the trust group as it stands (what older troves
// read); "group" holds the signed membership records it follows from
// (base64 of each record's CBOR), removals included. A peer in "peers"
// with no record was paired by `peer allow` before groups existed: it is
// trusted here only, until a record says otherwise.

type trustFile struct {
	Peers []trustEntry `json:"peers"`
	Group []string     `json:"group,omitempty"`
}

type trustEntry struct {
	ID    string   `json:"id"`
	Name  string   `json:"name,omitempty"`
	Addrs []string `json:"addrs,omitempty"` // where it was last known to listen (hints)
}

// TrustPath is the trust group file of a home.
func TrustPath(home string) string { return filepath.Join(home, "peers.json") }

// Members is a home's view of its group: the signed records, the peers
// trusted here only, and where members were last known to listen. It is
// not safe for concurrent use.
type Members struct {
	Set   *group.Set
	Local map[peer.ID]string
	Addrs map[peer.ID][]ma.Multiaddr
	// Self is this machine, when its identity exists.
	Self peer.ID
}

// LoadMembers reads peers.json; a missing file is an empty group. self
// may be empty.
func LoadMembers(home string, self peer.ID) (*Members, error) {
	b, err := os.ReadFile(TrustPath(home))
	if errors.Is(err, os.ErrNotExist) {
		return parseMembers(nil, self)
	}
	if err != nil {
		return nil, err
	}
	m, err := parseMembers(b, self)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TrustPath(home), err)
	}
	return m, nil
}

// parseMembers reads peers.json's bytes; none is an empty group.
func parseMembers(b []byte, self peer.ID) (*Members, error) {
	m := &Members{Set: group.NewSet(), Local: map[peer.ID]string{}, Addrs: map[peer.ID][]ma.Multiaddr{}, Self: self}
	if b == nil {
		return m, nil
	}
	var f trustFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if len(f.Group) > group.MaxMembers {
		return nil, fmt.Errorf("%d group records, more than %d", len(f.Group), group.MaxMembers)
	}
	for _, s := range f.Group {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("a group record: %w", err)
		}
		r, err := group.DecodeRecord(raw)
		if err == nil {
			err = m.Set.Put(r)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, e := range f.Peers {
		id, err := peer.Decode(e.ID)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", e.ID, err)
		}
		if _, ok := m.Set.Get(id); !ok {
			m.Local[id] = e.Name
		}
		for _, s := range e.Addrs {
			if a, err := ma.NewMultiaddr(s); err == nil {
				m.Addrs[id] = append(m.Addrs[id], a)
			}
		}
	}
	return m, nil
}

// Trust is the trust group the records and local pairings make: every
// member but this machine, by name.
func (m *Members) Trust() map[peer.ID]string {
	out := map[peer.ID]string{}
	for p, n := range m.Local {
		out[p] = n
	}
	for _, r := range m.Set.Records() {
		p := r.PeerID()
		switch {
		case r.Removed:
			delete(out, p)
		case r.Name != "" || out[p] == "":
			out[p] = r.Name
		}
	}
	delete(out, m.Self)
	return out
}

// Save writes peers.json atomically.
func (m *Members) Save(home string) error {
	var f trustFile
	for id, name := range m.Trust() {
		e := trustEntry{ID: id.String(), Name: name}
		for _, a := range m.Addrs[id] {
			e.Addrs = append(e.Addrs, a.String())
		}
		f.Peers = append(f.Peers, e)
	}
	slices.SortFunc(f.Peers, func(a, b trustEntry) int { return strings.Compare(a.ID, b.ID) })
	for _, r := range m.Set.Records() {
		b, err := r.Encode()
		if err != nil {
			return err
		}
		f.Group = append(f.Group, base64.StdEncoding.EncodeToString(b))
	}
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

// selfIfKnown is this home's peer ID if its identity exists; reading
// the trust group must not create one.
func selfIfKnown(home string) peer.ID {
	b, err := os.ReadFile(filepath.Join(home, "keys", "peer.key"))
	if err != nil {
		return ""
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return ""
	}
	id, _ := peer.IDFromPrivateKey(k)
	return id
}

// LoadTrust reads the trust group; a missing file is an empty group.
func LoadTrust(home string) (*p2p.TrustGroup, error) {
	m, err := LoadMembers(home, selfIfKnown(home))
	if err != nil {
		return nil, err
	}
	return p2p.NewTrustGroup(m.Trust()), nil
}

// SaveTrust writes the trust group g, keeping the group's records: a peer
// of g without a record is trusted here only.
func SaveTrust(home string, g *p2p.TrustGroup) error {
	m, err := LoadMembers(home, selfIfKnown(home))
	if err != nil {
		return err
	}
	want := g.Peers()
	for p := range m.Trust() {
		if _, ok := want[p]; !ok {
			delete(m.Local, p)
		}
	}
	for p, n := range want {
		if !m.Set.Live(p) {
			m.Local[p] = n
		}
	}
	return m.Save(home)
}
