package localapi

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/p2p"
)

// Operations on the trust group and the agent's identity and state.
var (
	AllowPeer  = register("peer-allow", doAllowPeer)
	RemovePeer = register("peer-remove", doRemovePeer)
	ListPeers  = register("peer-list", doListPeers)
	ID         = register("id", doID)
	Status     = register("status", doStatus)
	Peers      = register("peers", doPeers)
)

// PeerRequest names a peer of the trust group.
type PeerRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// PeerResponse names the peer changed, as peer IDs are written.
type PeerResponse struct {
	ID string `json:"id"`
}

// editTrust changes the trust group: the agent's when one runs (so it
// takes effect at once), else the file's.
func editTrust(e *Env, inAgent func(*agent.Agent) error, inFile func(*p2p.TrustGroup) error) error {
	if ag := e.Agent(); ag != nil {
		return inAgent(ag)
	}
	g, err := agent.LoadTrust(e.Home)
	if err != nil {
		return err
	}
	if err := inFile(g); err != nil {
		return err
	}
	return agent.SaveTrust(e.Home, g)
}

func doAllowPeer(ctx context.Context, e *Env, req PeerRequest, _ func(Event)) (PeerResponse, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return PeerResponse{}, usagef("%q is not a peer ID (run `trove id` on the other machine): %v", req.ID, err)
	}
	return PeerResponse{ID: id.String()}, editTrust(e,
		func(ag *agent.Agent) error { return ag.Allow(id, req.Name) },
		func(g *p2p.TrustGroup) error { g.Allow(id, req.Name); return nil })
}

func doRemovePeer(ctx context.Context, e *Env, req PeerRequest, _ func(Event)) (PeerResponse, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return PeerResponse{}, usagef("%q is not a peer ID: %v", req.ID, err)
	}
	var was bool
	err = editTrust(e,
		func(ag *agent.Agent) (err error) { was, err = ag.Remove(id); return err },
		func(g *p2p.TrustGroup) error { was = g.Remove(id); return nil })
	if err == nil && !was {
		err = fmt.Errorf("%s is not in the trust group (see trove peer list)", id)
	}
	return PeerResponse{ID: id.String()}, err
}

// ListPeersRequest lists the trust group.
type ListPeersRequest struct{}

// TrustedPeer is a member of the trust group.
type TrustedPeer struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// ListPeersResponse lists the trust group by name, then ID.
type ListPeersResponse struct {
	Peers []TrustedPeer `json:"peers"`
}

func doListPeers(ctx context.Context, e *Env, _ ListPeersRequest, _ func(Event)) (ListPeersResponse, error) {
	r := ListPeersResponse{Peers: []TrustedPeer{}}
	var g *p2p.TrustGroup
	if ag := e.Agent(); ag != nil {
		g = ag.Trust
	} else {
		var err error
		if g, err = agent.LoadTrust(e.Home); err != nil {
			return r, err
		}
	}
	for id, n := range g.Peers() {
		r.Peers = append(r.Peers, TrustedPeer{id.String(), n})
	}
	slices.SortFunc(r.Peers, func(a, b TrustedPeer) int {
		return strings.Compare(a.Name+"\x00"+a.ID, b.Name+"\x00"+b.ID)
	})
	return r, nil
}

// IDRequest asks for this machine's peer ID and addresses.
type IDRequest struct{}

// IDResponse is this machine's peer ID and its addresses: a running
// agent's live ones, else those it will listen on.
type IDResponse struct {
	ID      string   `json:"id"`
	Addrs   []string `json:"addrs"`
	Running bool     `json:"agentRunning"`
}

func doID(ctx context.Context, e *Env, _ IDRequest, _ func(Event)) (IDResponse, error) {
	if ag := e.Agent(); ag != nil {
		st, err := ag.Status(ctx)
		if err != nil {
			return IDResponse{}, err
		}
		return IDResponse{ID: st.PeerID, Addrs: st.Addrs, Running: true}, nil
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(e.Home, "keys"))
	if err != nil {
		return IDResponse{}, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return IDResponse{}, err
	}
	fc, err := agent.LoadConfig(e.Home)
	if err != nil {
		return IDResponse{}, err
	}
	set, err := fc.Merge(agent.DefaultSettings(), func(string) bool { return false })
	if err != nil {
		return IDResponse{}, err
	}
	r := IDResponse{ID: id.String()}
	for _, l := range set.Listen {
		r.Addrs = append(r.Addrs, l+"/p2p/"+id.String())
	}
	return r, nil
}

// StatusRequest asks a running agent for its status.
type StatusRequest struct{}

// doStatus needs a running agent; without one it says so, and opens
// nothing (a command must never stand in the way of an agent starting).
func doStatus(ctx context.Context, e *Env, _ StatusRequest, _ func(Event)) (*agent.Status, error) {
	ag := e.Agent()
	if ag == nil {
		return nil, &Error{Kind: KindNotRunning, Message: agent.NotRunning(e.Home).Error()}
	}
	return ag.Status(ctx)
}

// PeersRequest asks a running agent for its peers.
type PeersRequest struct{}

func doPeers(ctx context.Context, e *Env, _ PeersRequest, _ func(Event)) ([]p2p.PeerStatus, error) {
	ag := e.Agent()
	if ag == nil {
		return nil, &Error{Kind: KindNotRunning, Message: agent.NotRunning(e.Home).Error()}
	}
	ps := ag.Node.Peers()
	if ps == nil {
		ps = []p2p.PeerStatus{}
	}
	return ps, nil
}

// API is the agent's Config.API: it serves this package's Handler.
func API(ag *agent.Agent) http.Handler { return Handler(ag, ag.Logger().With("component", "localapi")) }
