package localapi

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/p2p"
)

// members loads this home's identity and its view of the group, for a
// short-lived environment.
func (e *Env) members() (*agent.Members, crypto.PrivKey, error) {
	key, err := p2p.LoadOrCreateKey(filepath.Join(e.Home, "keys"))
	if err != nil {
		return nil, nil, err
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	m, err := agent.LoadMembers(e.Home, self)
	return m, key, err
}

// InviteRequest opens an invitation admitting Uses machines (default 1)
// for Expires (default an hour).
type InviteRequest struct {
	Uses    int           `json:"uses,omitempty"`
	Expires time.Duration `json:"expiresNs,omitempty"`
}

// InviteResponse carries the token, a secret shown once, and the
// invitation it opens.
type InviteResponse struct {
	Token  string     `json:"token"`
	Invite InviteInfo `json:"invite"`
}

// InviteInfo describes an invitation, never its secret.
type InviteInfo struct {
	ID      string    `json:"id"`
	Uses    int       `json:"uses"`
	Used    int       `json:"used"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// State is open, used, expired or revoked.
	State string `json:"state"`
}

func inviteInfo(iv group.Invite, now time.Time) InviteInfo {
	st := "open"
	switch {
	case iv.Revoked:
		st = "revoked"
	case iv.Used >= iv.Uses:
		st = "used"
	case !now.Before(iv.Expires):
		st = "expired"
	}
	return InviteInfo{ID: iv.ID, Uses: iv.Uses, Used: iv.Used, Created: iv.Created, Expires: iv.Expires, State: st}
}

func doInvite(ctx context.Context, e *Env, req InviteRequest, _ func(Event)) (InviteResponse, error) {
	ag := e.agent
	if ag == nil {
		return InviteResponse{}, &Error{Kind: KindNotRunning, Message: "inviting needs a running agent, to answer the machine that joins: start trove agent, then run trove invite again"}
	}
	if req.Uses == 0 {
		req.Uses = group.DefaultUses
	}
	if req.Expires == 0 {
		req.Expires = group.DefaultExpires
	}
	if req.Uses < 1 || req.Uses > group.MaxUses {
		return InviteResponse{}, usagef("--uses must be 1 to %d, not %d", group.MaxUses, req.Uses)
	}
	if req.Expires < 0 || req.Expires > group.MaxExpires {
		return InviteResponse{}, usagef("--expires must be above 0 and at most %v, not %v", group.MaxExpires, req.Expires)
	}
	tok, iv, err := ag.Invite(req.Uses, req.Expires)
	if err != nil {
		return InviteResponse{}, err
	}
	return InviteResponse{Token: tok, Invite: inviteInfo(iv, time.Now())}, nil
}

// ListInvitesRequest lists the invitations this member remembers.
type ListInvitesRequest struct{}

// ListInvitesResponse lists invitations, oldest first.
type ListInvitesResponse struct {
	Invites []InviteInfo `json:"invites"`
}

func (e *Env) invites() (*group.Invites, error) {
	if ag := e.agent; ag != nil {
		return ag.Invites(), nil
	}
	return group.OpenInvites(group.InvitesPath(e.Home))
}

func doListInvites(ctx context.Context, e *Env, _ ListInvitesRequest, _ func(Event)) (ListInvitesResponse, error) {
	r := ListInvitesResponse{Invites: []InviteInfo{}}
	b, err := e.invites()
	if err != nil {
		return r, err
	}
	now := time.Now()
	for _, iv := range b.List(now) {
		r.Invites = append(r.Invites, inviteInfo(iv, now))
	}
	return r, nil
}

// RevokeInviteRequest closes the invitation with this ID.
type RevokeInviteRequest struct {
	ID string `json:"id"`
}

func doRevokeInvite(ctx context.Context, e *Env, req RevokeInviteRequest, _ func(Event)) (struct{}, error) {
	b, err := e.invites()
	if err != nil {
		return struct{}{}, err
	}
	ok, err := b.Revoke(req.ID)
	if err == nil && !ok {
		err = fmt.Errorf("no open invitation has the ID %q (see trove invite list)", req.ID)
	}
	return struct{}{}, err
}

// JoinRequest joins the group of the member whose invitation Token is,
// as Name (default: this machine's host name).
type JoinRequest struct {
	Token string `json:"token"`
	Name  string `json:"name,omitempty"`
}

// JoinResponse says who let this machine in and how many members the
// group has, this one included.
type JoinResponse struct {
	Inviter      string `json:"inviter"`
	Members      int    `json:"members"`
	AgentRunning bool   `json:"agentRunning"`
}

func doJoin(ctx context.Context, e *Env, req JoinRequest, _ func(Event)) (JoinResponse, error) {
	tok, err := group.ParseToken(req.Token)
	if err != nil {
		return JoinResponse{}, &UsageError{err}
	}
	name := req.Name
	if name == "" {
		name = agent.SelfName()
	}
	if err := group.CheckName(name); err != nil {
		return JoinResponse{}, &UsageError{err}
	}
	r := JoinResponse{Inviter: tok.Peer.String()}
	if ag := e.agent; ag != nil {
		if tok.Peer == ag.Node.ID() {
			return r, usagef("this invitation is this machine's own: run trove join on the machine to add")
		}
		r.AgentRunning = true
		r.Members, err = ag.JoinGroup(ctx, tok, name)
		return r, err
	}
	m, key, err := e.members()
	if err != nil {
		return r, err
	}
	if tok.Peer == m.Self {
		return r, usagef("this invitation is this machine's own: run trove join on the machine to add")
	}
	n, err := p2p.New(ctx, p2p.Config{Key: key, Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		Trust: p2p.NewTrustGroup(m.Trust()), Logger: e.Log})
	if err != nil {
		return r, err
	}
	defer n.Close()
	// Addresses of this short-lived node would be dead in a moment: members
	// learn the agent's when it connects to them.
	u, err := n.Join(ctx, tok, name, nil)
	if err != nil {
		return r, err
	}
	if r.Members, err = agent.AdoptGroup(m, tok, u); err != nil {
		return r, err
	}
	return r, m.Save(e.Home)
}

// ListGroupRequest lists the members of the group.
type ListGroupRequest struct{}

// ListGroupResponse lists the members, this machine first.
type ListGroupResponse struct {
	Members []agent.Member `json:"members"`
}

func doListGroup(ctx context.Context, e *Env, _ ListGroupRequest, _ func(Event)) (ListGroupResponse, error) {
	if ag := e.agent; ag != nil {
		return ListGroupResponse{Members: ag.GroupMembers()}, nil
	}
	m, _, err := e.members()
	if err != nil {
		return ListGroupResponse{}, err
	}
	return ListGroupResponse{Members: m.List(nil)}, nil
}

// RemoveMemberRequest removes members, each named by peer ID or name.
type RemoveMemberRequest struct {
	Peers []string `json:"peers"`
}

// RemoveMemberResponse lists the peer IDs removed, in order; on an error,
// those removed before it.
type RemoveMemberResponse struct {
	Removed []string `json:"removed"`
}

// resolveMember finds the member a peer ID or a name names.
func resolveMember(members []agent.Member, s string) (peer.ID, error) {
	if id, err := peer.Decode(s); err == nil {
		return id, nil
	}
	var found []agent.Member
	for _, m := range members {
		if m.Name == s {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return "", usagef("no member is named %q and it is not a peer ID (see trove group list)", s)
	case 1:
		if found[0].Self {
			return "", usagef("%q is this machine: run trove group remove on another member", s)
		}
		return peer.Decode(found[0].ID)
	}
	return "", usagef("%d members are named %q: give the peer ID instead (see trove group list)", len(found), s)
}

func doRemoveMember(ctx context.Context, e *Env, req RemoveMemberRequest, ev func(Event)) (RemoveMemberResponse, error) {
	r := RemoveMemberResponse{Removed: []string{}}
	list, err := doListGroup(ctx, e, ListGroupRequest{}, ev)
	if err != nil {
		return r, err
	}
	var ids []peer.ID
	for _, s := range req.Peers {
		id, err := resolveMember(list.Members, s)
		if err != nil {
			return r, err
		}
		if !slices.ContainsFunc(list.Members, func(m agent.Member) bool { return m.ID == id.String() }) {
			return r, fmt.Errorf("%s is not a member (see trove group list)", id)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		var was bool
		err := editTrust(e,
			func(ag *agent.Agent) (err error) { was, err = ag.Remove(id); return err },
			func(m *agent.Members, key crypto.PrivKey) error {
				_, was = m.Trust()[id]
				return agent.ChangeMembers(m, key, id, "", true)
			})
		var re *group.RemovedError
		if errors.As(err, &re) {
			return r, err
		}
		if err != nil {
			return r, fmt.Errorf("removing %s: %w", id, err)
		}
		if !was {
			return r, fmt.Errorf("%s is not a member (see trove group list)", id)
		}
		r.Removed = append(r.Removed, id.String())
	}
	return r, nil
}
