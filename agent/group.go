package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/p2p"
)

// The agent keeps the group: it answers machines that come to join with
// an invitation, merges the records members push, applies the result to
// the trust group its gater uses (closing a removed member's connections
// at once), saves it in peers.json, and pushes its set to every connected
// member whenever it changes and to each member as it connects. Changes
// spread member to member, so a member not connected to the one that made
// a change hears of it from another.

// keeper is the agent as the node's p2p.GroupKeeper.
type keeper struct{ a *Agent }

var _ p2p.GroupKeeper = keeper{}

// SelfName is the name this machine gives itself in the group: its host name.
func SelfName() string {
	h, _ := os.Hostname()
	if group.CheckName(h) != nil {
		return ""
	}
	return h
}

// change signs and applies a change of p's membership, saves it and tells
// the members (but p: a machine joining learns the group in the answer).
func (a *Agent) change(p peer.ID, name string, removed bool) error {
	a.trustMu.Lock()
	err := ChangeMembers(a.members, a.key, p, name, removed)
	if err == nil {
		err = a.applyLocked()
	}
	a.trustMu.Unlock()
	if err == nil {
		a.pushGroup(p)
	}
	return err
}

// applyLocked makes the trust group what the members say, forgetting
// (and disconnecting) peers that left it, and saves peers.json. The
// caller holds trustMu.
func (a *Agent) applyLocked() error {
	want := a.members.Trust()
	for p := range a.Trust.Peers() {
		if _, ok := want[p]; !ok {
			a.Trust.Remove(p)
			a.Node.Forget(p)
			a.log.Info("a peer left the trust group; its connections are closed", "peer", p)
		}
	}
	for p, n := range want {
		if !a.Trust.Contains(p) || a.Trust.Name(p) != n {
			a.Trust.Allow(p, n)
		}
	}
	return a.members.Save(a.Home)
}

// update is the group as this agent sees it, with what it knows of
// members' addresses.
func (a *Agent) update() p2p.GroupUpdate {
	a.trustMu.Lock()
	defer a.trustMu.Unlock()
	return a.updateLocked()
}

func (a *Agent) updateLocked() p2p.GroupUpdate {
	u := p2p.GroupUpdate{Records: a.members.Set.Records()}
	ps := a.Node.Host().Peerstore()
	for _, r := range u.Records {
		p := r.PeerID()
		if r.Removed {
			continue
		}
		var addrs []ma.Multiaddr
		if p == a.Node.ID() {
			addrs = a.Node.Host().Addrs()
		} else {
			addrs = append(ps.Addrs(p), a.members.Addrs[p]...)
		}
		if addrs = shareable(addrs); len(addrs) > 0 {
			u.Addrs = append(u.Addrs, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	return u
}

// shareable orders addresses for other machines, loopback ones last
// (they only help on this machine), without duplicates, at most 8.
func shareable(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out, lo []ma.Multiaddr
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[string(a.Bytes())] {
			continue
		}
		seen[string(a.Bytes())] = true
		if manet.IsIPLoopback(a) {
			lo = append(lo, a)
		} else {
			out = append(out, a)
		}
	}
	return append(out, lo...)[:min(len(out)+len(lo), 8)]
}

// pushGroup sends the group to every connected member but except.
func (a *Agent) pushGroup(except peer.ID) {
	u := a.update()
	for _, p := range a.Node.ConnectedPeers() {
		if p != except && a.Trust.Contains(p) {
			a.pushTo(p, u)
		}
	}
}

// pushTo sends u to p in the background.
func (a *Agent) pushTo(p peer.ID, u p2p.GroupUpdate) {
	if a.bg == nil || a.bg.Err() != nil {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.Node.PushGroup(a.bg, p, u); err != nil {
			a.log.Debug("pushing the group to a member failed; it hears of it from another, or when it reconnects", "peer", p, "err", err)
		}
	}()
}

// learnAddrs records where members listen and keeps every member with a
// known address connected. The caller holds trustMu.
func (a *Agent) learnAddrsLocked(ais []peer.AddrInfo) {
	for _, ai := range ais {
		if ai.ID == a.Node.ID() || !a.members.Set.Live(ai.ID) || len(ai.Addrs) == 0 {
			continue
		}
		a.members.Addrs[ai.ID] = shareable(ai.Addrs)
		if a.Node.Host().Network().Connectedness(ai.ID) != network.Connected {
			a.Node.KeepConnected(peer.AddrInfo{ID: ai.ID, Addrs: a.members.Addrs[ai.ID]})
		}
	}
}

// startGroup pushes the group to each member as it connects, and keeps
// members with known addresses connected.
func (a *Agent) startGroup() {
	a.Node.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if p := c.RemotePeer(); a.Trust.Contains(p) {
			a.pushTo(p, a.update())
		}
	}})
	a.trustMu.Lock()
	defer a.trustMu.Unlock()
	for p, addrs := range a.members.Addrs {
		if a.Trust.Contains(p) && len(addrs) > 0 {
			a.Node.KeepConnected(peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
}

// JoinsOpen reports whether machine p may come to ask to join: while an
// invitation is open, or closed less than a day ago, so that a used or
// expired token gets a clear refusal rather than a closed connection. A
// removed member may not: only a member adding it again (peer allow)
// brings it back, so a stolen machine cannot rejoin with a token it saw.
func (k keeper) JoinsOpen(p peer.ID) bool {
	k.a.trustMu.Lock()
	r, ok := k.a.members.Set.Get(p)
	k.a.trustMu.Unlock()
	return !(ok && r.Removed) && len(k.a.invites.List(time.Now())) > 0
}

// started waits until the agent has its node and background context,
// which the keeper's calls use; false if the agent failed to start or ctx
// ended first.
func (k keeper) started(ctx context.Context) bool {
	select {
	case <-k.a.ready:
		return k.a.bg != nil
	case <-ctx.Done():
		return false
	}
}

// Join admits a machine that presents an open invitation's secret.
func (k keeper) Join(ctx context.Context, j p2p.Joiner) (p2p.GroupUpdate, error) {
	a := k.a
	if !k.started(ctx) {
		return p2p.GroupUpdate{}, errors.New("the member is not started yet; try again")
	}
	if _, err := a.invites.Redeem(j.Secret, time.Now()); err != nil {
		var re *group.RefusedError
		if errors.As(err, &re) {
			return p2p.GroupUpdate{}, err
		}
		a.log.Warn("answering a machine asking to join", "peer", j.ID, "err", err)
		return p2p.GroupUpdate{}, errors.New("the member could not record the use of its invitation; try again")
	}
	name := j.Name
	if err := a.change(j.ID, name, false); err != nil {
		a.log.Warn("adding a machine that joined", "peer", j.ID, "err", err)
		return p2p.GroupUpdate{}, fmt.Errorf("the member could not add this machine: %v", err)
	}
	a.trustMu.Lock()
	if len(j.Addrs) > 0 {
		a.members.Addrs[j.ID] = shareable(j.Addrs)
		a.members.Save(a.Home)
	}
	u := a.updateLocked()
	a.trustMu.Unlock()
	a.log.Info("a machine joined the group with an invitation", "peer", j.ID, "name", name)
	return u, nil
}

// Receive merges the group as a member sees it.
func (k keeper) Receive(from peer.ID, u p2p.GroupUpdate) {
	a := k.a
	if !k.started(context.Background()) {
		return // the agent failed to start
	}
	a.trustMu.Lock()
	changed := a.members.Set.Merge(u.Records, nil)
	var err error
	if len(changed) > 0 {
		err = a.applyLocked()
	}
	a.learnAddrsLocked(u.Addrs)
	a.trustMu.Unlock()
	if err != nil {
		a.log.Warn("saving the trust group", "err", err)
	}
	if len(changed) > 0 {
		a.log.Info("the group changed", "from", from, "records", len(changed))
		a.pushGroup(from)
	}
}

// Invite opens an invitation admitting uses machines until expires from
// now, and returns its token. The token's secret is kept nowhere.
func (a *Agent) Invite(uses int, expires time.Duration) (string, group.Invite, error) {
	a.trustMu.Lock()
	err := ensureSelf(a.members, a.key)
	if err == nil {
		err = a.applyLocked()
	}
	a.trustMu.Unlock()
	if err != nil {
		return "", group.Invite{}, err
	}
	secret, iv, err := a.invites.Create(uses, expires, time.Now())
	if err != nil {
		return "", iv, err
	}
	tok := group.Token{Peer: a.Node.ID(), Secret: secret}
	for _, m := range shareable(a.Node.Host().Addrs()) {
		if !manet.IsIPLoopback(m) || len(tok.Addrs) == 0 && onlyLoopback(a.Node.Host().Addrs()) {
			tok.Addrs = append(tok.Addrs, m)
		}
	}
	a.pushGroup("")
	return tok.Encode(), iv, nil
}

func onlyLoopback(addrs []ma.Multiaddr) bool {
	return !slices.ContainsFunc(addrs, func(m ma.Multiaddr) bool { return !manet.IsIPLoopback(m) })
}

// Invites are the agent's invitations.
func (a *Agent) Invites() *group.Invites { return a.invites }

// JoinGroup joins the group of the member that printed token, as name.
// It returns the inviter and the members now known.
func (a *Agent) JoinGroup(ctx context.Context, tok *group.Token, name string) (int, error) {
	u, err := a.Node.Join(ctx, tok, name, a.Node.Host().Addrs())
	if err != nil {
		return 0, err
	}
	a.trustMu.Lock()
	n, err := AdoptGroup(a.members, tok, u)
	if err == nil {
		err = a.applyLocked()
		a.learnAddrsLocked(append(u.Addrs, peer.AddrInfo{ID: tok.Peer, Addrs: tok.Addrs}))
	}
	a.trustMu.Unlock()
	if err == nil {
		a.pushGroup(tok.Peer)
	}
	return n, err
}

// AdoptGroup takes the group a member answered a join with into m and
// returns how many members it has.
func AdoptGroup(m *Members, tok *group.Token, u p2p.GroupUpdate) (int, error) {
	m.Set.Adopt(u.Records, tok.Peer)
	if !m.Set.Live(m.Self) || !m.Set.Live(tok.Peer) {
		return 0, fmt.Errorf("%s let this machine join but sent no group holding both: it runs another version of trove", tok.Peer)
	}
	for _, ai := range u.Addrs {
		if m.Set.Live(ai.ID) && ai.ID != m.Self && len(ai.Addrs) > 0 {
			m.Addrs[ai.ID] = shareable(ai.Addrs)
		}
	}
	if _, ok := m.Addrs[tok.Peer]; !ok {
		m.Addrs[tok.Peer] = tok.Addrs
	}
	n := 0
	for _, r := range m.Set.Records() {
		if !r.Removed {
			n++
		}
	}
	return n, nil
}

// Member is one member of the group as `trove group list` shows it.
type Member struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Self      bool      `json:"self,omitempty"`
	AddedBy   string    `json:"addedBy,omitempty"`
	Added     time.Time `json:"added,omitzero"`
	Local     bool      `json:"localOnly,omitempty"` // paired by peer allow before groups: not shared
	Connected bool      `json:"connected"`
}

// List lists the members, this machine first, then by name and ID.
// connected (may be nil) says which peers are connected.
func (m *Members) List(connected func(peer.ID) bool) []Member {
	out := []Member{}
	for p, n := range m.Trust() {
		e := Member{ID: p.String(), Name: n}
		if r, ok := m.Set.Get(p); ok {
			e.AddedBy, e.Added = r.Signer().String(), r.Time().UTC()
		} else {
			e.Local = true
		}
		e.Connected = connected != nil && connected(p)
		out = append(out, e)
	}
	if r, ok := m.Set.Get(m.Self); ok && !r.Removed {
		out = append(out, Member{ID: m.Self.String(), Name: r.Name, Self: true, AddedBy: r.Signer().String(), Added: r.Time().UTC()})
	}
	slices.SortFunc(out, func(x, y Member) int {
		switch {
		case x.Self != y.Self:
			if x.Self {
				return -1
			}
			return 1
		case x.Name != y.Name:
			if x.Name < y.Name {
				return -1
			}
			return 1
		case x.ID < y.ID:
			return -1
		}
		return 1
	})
	return out
}

// GroupMembers lists the group as the agent sees it.
func (a *Agent) GroupMembers() []Member {
	a.trustMu.Lock()
	defer a.trustMu.Unlock()
	return a.members.List(func(p peer.ID) bool {
		return a.Node.Host().Network().Connectedness(p) == network.Connected
	})
}

// ChangeMembers signs a change of p's membership in m with key, for a
// home without a running agent; the members hear of it when its agent
// next connects to them.
func ChangeMembers(m *Members, key crypto.PrivKey, p peer.ID, name string, removed bool) error {
	if err := ensureSelf(m, key); err != nil {
		return err
	}
	_, err := m.Set.Change(key, p, name, removed, time.Now())
	if err == nil && removed {
		delete(m.Local, p)
	}
	return err
}

// ensureSelf makes this machine a member of its own group, named after
// its host, if no record names it yet (the first member of a group
// vouches for itself).
func ensureSelf(m *Members, key crypto.PrivKey) error {
	if _, ok := m.Set.Get(m.Self); ok {
		return nil
	}
	_, err := m.Set.Change(key, m.Self, SelfName(), false, time.Now())
	return err
}
