package p2p

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TrustGroup is the set of peers allowed to fetch from this agent. It is
// safe for concurrent use; the agent persists it.
type TrustGroup struct {
	mu    sync.RWMutex
	peers map[peer.ID]string // peer → name
}

// NewTrustGroup returns a group holding peers (ID → name).
func NewTrustGroup(peers map[peer.ID]string) *TrustGroup {
	g := &TrustGroup{peers: map[peer.ID]string{}}
	for p, n := range peers {
		g.peers[p] = n
	}
	return g
}

// Contains reports whether p is in the group.
func (g *TrustGroup) Contains(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.peers[p]
	return ok
}

// Name returns the name p was paired under.
func (g *TrustGroup) Name(p peer.ID) string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.peers[p]
}

// Allow adds or renames p.
func (g *TrustGroup) Allow(p peer.ID, name string) {
	g.mu.Lock()
	g.peers[p] = name
	g.mu.Unlock()
}

// Remove drops p; it reports whether p was there.
func (g *TrustGroup) Remove(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.peers[p]
	delete(g.peers, p)
	return ok
}

// Peers returns a copy of the group.
func (g *TrustGroup) Peers() map[peer.ID]string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make(map[peer.ID]string, len(g.peers))
	for p, n := range g.peers {
		out[p] = n
	}
	return out
}
