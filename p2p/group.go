package p2p

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/group"
)

// Groups: a machine not yet in the trust group joins it by presenting an
// invitation's secret to the member that printed it, over the join
// protocol; that member's gater lets a stranger in for this alone, while
// it holds open invitations, a few at a time and briefly. Members keep
// each other's view of the group (signed records, see package group) in
// step over the group protocol: each pushes its whole set to a member
// when they connect, and to every connected member when its set changes.
// What a set becomes is the GroupKeeper's (the agent's) decision.

// Protocol IDs of groups.
const (
	ProtoJoin  = "/trove/join/1.0.0"
	ProtoGroup = "/trove/group/1.0.0"
)

// Caps of the group protocols.
const (
	maxJoinRequest = 1 << 10
	// maxGroupMessage bounds a join answer and a group push: MaxMembers
	// records (about 250 bytes each with Ed25519 keys) and their addresses.
	maxGroupMessage = 1 << 20
	// maxMemberAddrs is the most addresses a message gives one member.
	maxMemberAddrs = 8
	maxAddrBytes   = 64
	// joinWindow is how long a stranger admitted to join may stay
	// connected without becoming a member, and joinStart how soon it must
	// have asked to join.
	joinWindow = 15 * time.Second
	joinStart  = 2 * time.Second
	// maxJoiners is the most strangers admitted at once.
	maxJoiners = 16
	// joinRate and joinBurst bound join attempts per second, from all peers.
	joinRate  = 4
	joinBurst = 16
	// joinTimeout bounds a join, from dialling to the answer.
	joinTimeout = 20 * time.Second
	// pushTimeout bounds one push of the group.
	pushTimeout = 10 * time.Second
)

// JoinRequest presents an invitation's secret, the name the machine asks
// to be known by, and addresses where members may reach it.
type JoinRequest struct {
	Secret []byte   `cbor:"1,keyasint"`
	Name   string   `cbor:"2,keyasint,omitempty"`
	Addrs  [][]byte `cbor:"3,keyasint,omitempty"`
}

// JoinResponse refuses a join (Err) or welcomes the new member with the
// group as its inviter sees it.
type JoinResponse struct {
	Err     string         `cbor:"1,keyasint,omitempty"`
	Records []group.Record `cbor:"2,keyasint,omitempty"`
	Addrs   []PeerAddrs    `cbor:"3,keyasint,omitempty"`
}

// GroupMessage is a member's whole view of the group and the addresses it
// knows of members (hints, not signed).
type GroupMessage struct {
	Records []group.Record `cbor:"1,keyasint"`
	Addrs   []PeerAddrs    `cbor:"2,keyasint,omitempty"`
}

// PeerAddrs are addresses of one peer.
type PeerAddrs struct {
	Peer  []byte   `cbor:"1,keyasint"`
	Addrs [][]byte `cbor:"2,keyasint"`
}

var (
	decJoinRequest = msgLimits(maxJoinRequest, 32, maxMemberAddrs)
	// A record is a map of 7 pairs (15 items); addresses 1+2+maxMemberAddrs+2.
	decGroupMessage = msgLimits(maxGroupMessage, group.MaxMembers*(15+maxMemberAddrs+5)+16, group.MaxMembers)
)

// GroupUpdate is a group message as the keeper sees it.
type GroupUpdate struct {
	Records []group.Record
	Addrs   []peer.AddrInfo
}

// Joiner is a machine asking to join.
type Joiner struct {
	ID     peer.ID
	Secret []byte // never log it
	Name   string
	Addrs  []ma.Multiaddr
}

// GroupKeeper keeps the group; the agent is one.
type GroupKeeper interface {
	// JoinsOpen reports whether stranger p may connect to ask to join.
	JoinsOpen(p peer.ID) bool
	// Join answers a machine asking to join: the group as it stands with
	// the machine in it, or an error whose message the machine is told.
	Join(ctx context.Context, j Joiner) (GroupUpdate, error)
	// Receive takes the group as a member sees it.
	Receive(from peer.ID, u GroupUpdate)
}

// JoinRefusedError is a member's refusal of a join.
type JoinRefusedError struct {
	Peer   peer.ID
	Reason string
}

func (e *JoinRefusedError) Error() string {
	return fmt.Sprintf("%s refused to let this machine join: %s", e.Peer, e.Reason)
}

// admitted counts the strangers the gater let in, each for a while.
type admitted struct {
	mu sync.Mutex
	n  map[peer.ID]int // by connections admitted
}

// add admits p for window, unless max others are admitted already.
func (a *admitted) add(p peer.ID, max int, window time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.n) >= max && a.n[p] == 0 {
		return false
	}
	if a.n == nil {
		a.n = map[peer.ID]int{}
	}
	a.n[p]++
	time.AfterFunc(window, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.n[p]--; a.n[p] <= 0 {
			delete(a.n, p)
		}
	})
	return true
}

// has says whether p is admitted now.
func (a *admitted) has(p peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[p] > 0
}

// joiners admits strangers who come to join, a few at a time.
type joiners struct {
	keeper  GroupKeeper
	pending admitted // strangers admitted to join

	mu     sync.Mutex
	asking map[peer.ID]int // strangers with a join stream open
	tokens float64         // join attempts that may start now
	last   time.Time
}

func newJoiners(k GroupKeeper) *joiners {
	if k == nil {
		return nil
	}
	return &joiners{keeper: k, asking: map[peer.ID]int{}, tokens: joinBurst}
}

// admit decides whether stranger p's inbound connection may proceed: while
// invitations are open, at most maxJoiners at a time, each for joinWindow.
func (j *joiners) admit(p peer.ID) bool {
	return j != nil && j.keeper.JoinsOpen(p) && j.pending.add(p, maxJoiners, joinWindow)
}

// stranger reports whether p was admitted only to join.
func (j *joiners) stranger(p peer.ID) bool { return j != nil && j.pending.has(p) }

// attempt takes one join attempt from the rate limit.
func (j *joiners) attempt(now time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.tokens = min(joinBurst, j.tokens+now.Sub(j.last).Seconds()*joinRate)
	j.last = now
	if j.tokens < 1 {
		return false
	}
	j.tokens--
	return true
}

// watchJoiner closes an admitted stranger's connection once its join
// window has passed, unless it became a member.
func (g *gater) watchJoiner(c network.Conn) {
	p := c.RemotePeer()
	if c.Stat().Direction != network.DirInbound || g.allowed(p) || !g.joins.stranger(p) {
		return
	}
	time.AfterFunc(joinStart, func() {
		g.joins.mu.Lock()
		asking := g.joins.asking[p] > 0
		g.joins.mu.Unlock()
		if !asking && !g.allowed(p) {
			c.Close()
		}
	})
	time.AfterFunc(joinWindow, func() {
		if !g.allowed(p) {
			c.Close()
		}
	})
}

// startGroups serves the group protocols.
func (n *Node) startGroups(k GroupKeeper) {
	n.host.SetStreamHandler(ProtoJoin, n.handleJoin)
	s := &server{node: n, log: n.log, idle: idleTimeout, write: writeTimeout, memWait: memoryWait}
	n.host.SetStreamHandler(ProtoGroup, s.serve("group", func(ctx context.Context, st network.Stream, r *bufio.Reader) error {
		st.SetReadDeadline(time.Now().Add(pushTimeout))
		var m GroupMessage
		held, err := s.readRequest(ctx, st, r, maxGroupMessage, &m)
		if err != nil {
			return err
		}
		defer st.Scope().ReleaseMemory(held)
		u, err := updateOf(m.Records, m.Addrs)
		if err != nil {
			return err
		}
		k.Receive(st.Conn().RemotePeer(), u)
		return nil
	}))
}

// handleJoin answers a machine asking to join. Whatever the outcome, a
// machine that is not a member afterwards is disconnected.
func (n *Node) handleJoin(st network.Stream) {
	p := st.Conn().RemotePeer()
	defer func() {
		if !n.gater.allowed(p) {
			n.host.Network().ClosePeer(p)
		}
	}()
	k := n.gater.joins
	if k == nil {
		st.Reset()
		return
	}
	k.mu.Lock()
	k.asking[p]++
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		if k.asking[p]--; k.asking[p] <= 0 {
			delete(k.asking, p)
		}
		k.mu.Unlock()
	}()
	st.SetDeadline(time.Now().Add(joinTimeout))
	refuse := func(reason string) {
		n.log.Info("refused a machine asking to join", "peer", p, "reason", reason)
		writeMsg(st, &JoinResponse{Err: reason})
		st.CloseWrite()
		// Let the answer reach the machine before the connection goes.
		st.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [1]byte
		st.Read(b[:])
		st.Close()
	}
	if !k.attempt(time.Now()) {
		refuse("too many machines are asking to join at once: try again in a few seconds")
		return
	}
	var req JoinRequest
	held, err := readMsgIn(bufio.NewReaderSize(st, maxJoinRequest+16), maxJoinRequest, &req, func(sz int) error {
		return st.Scope().ReserveMemory(sz, network.ReservationPriorityAlways)
	})
	if held > 0 {
		defer st.Scope().ReleaseMemory(held)
	}
	if err != nil {
		n.log.Debug("a join request that breaks the protocol", "peer", p, "err", err)
		st.Reset()
		return
	}
	j := Joiner{ID: p, Secret: req.Secret, Name: req.Name}
	if j.Addrs, err = addrsOf(req.Addrs); err != nil || len(req.Secret) != group.SecretLen || group.CheckName(req.Name) != nil {
		refuse("a malformed join request (upgrade trove on both machines)")
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, joinTimeout)
	defer cancel()
	u, err := k.keeper.Join(ctx, j)
	if err != nil {
		refuse(err.Error())
		return
	}
	if err := writeMsg(st, &JoinResponse{Records: u.Records, Addrs: wireAddrs(u.Addrs)}); err != nil {
		st.Reset()
		return
	}
	st.Close()
}

// Join dials the member an invitation names and asks to join with its
// secret, as name, giving addrs as where members may reach this machine.
// A refusal is a *JoinRefusedError.
func (n *Node) Join(ctx context.Context, tok *group.Token, name string, addrs []ma.Multiaddr) (GroupUpdate, error) {
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	if err := n.Connect(ctx, peer.AddrInfo{ID: tok.Peer, Addrs: tok.Addrs}); err != nil {
		return GroupUpdate{}, fmt.Errorf("cannot reach the member that invited this machine (%s at %v): %w", tok.Peer, tok.Addrs, err)
	}
	st, done, err := n.stream(ctx, tok.Peer, ProtoJoin)
	if err != nil {
		return GroupUpdate{}, fmt.Errorf("%s closed the connection: it holds no invitation now (this one was revoked or closed over a day ago), or is not a trove agent of this version: %w", tok.Peer, err)
	}
	defer done()
	req := JoinRequest{Secret: tok.Secret[:], Name: name}
	for _, a := range addrs {
		if len(req.Addrs) < maxMemberAddrs && len(a.Bytes()) <= maxAddrBytes {
			req.Addrs = append(req.Addrs, a.Bytes())
		}
	}
	if err := writeMsg(st, &req); err != nil {
		return GroupUpdate{}, fmt.Errorf("asking %s to join: %w", tok.Peer, err)
	}
	// The write side stays open until the answer is read: the member waits
	// for it to close before it drops a refused machine's connection, so
	// that the refusal arrives first.
	var resp JoinResponse
	held, err := readMsgIn(bufio.NewReaderSize(st, 64<<10), maxGroupMessage, &resp, func(sz int) error {
		return reserveWait(ctx, st.Scope(), sz, joinTimeout)
	})
	if held > 0 {
		defer st.Scope().ReleaseMemory(held)
	}
	if err != nil {
		return GroupUpdate{}, fmt.Errorf("the answer of %s to joining: %w", tok.Peer, err)
	}
	if resp.Err != "" {
		return GroupUpdate{}, &JoinRefusedError{Peer: tok.Peer, Reason: resp.Err}
	}
	return updateOf(resp.Records, resp.Addrs)
}

// PushGroup sends u to member p.
func (n *Node) PushGroup(ctx context.Context, p peer.ID, u GroupUpdate) error {
	return n.exchange(ctx, p, ProtoGroup, pushTimeout, func(_ context.Context, st network.Stream) error {
		return writeMsg(st, &GroupMessage{Records: u.Records, Addrs: wireAddrs(u.Addrs)})
	})
}

// Forget stops keeping p connected (KeepConnected) and drops its
// connections if it may not fetch from this node.
func (n *Node) Forget(p peer.ID) {
	n.mu.Lock()
	wake, ok := n.static[p]
	delete(n.static, p)
	n.mu.Unlock()
	if ok {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	n.Untrust(p)
}

// updateOf checks a message's sizes and parses its addresses. Records are
// checked by the keeper (signatures) and by group.Set.
func updateOf(recs []group.Record, addrs []PeerAddrs) (GroupUpdate, error) {
	if len(recs) > group.MaxMembers || len(addrs) > group.MaxMembers {
		return GroupUpdate{}, fmt.Errorf("%w: %d records and %d addresses, at most %d each", ErrProtocol, len(recs), len(addrs), group.MaxMembers)
	}
	u := GroupUpdate{Records: recs}
	for _, pa := range addrs {
		id, err := peer.IDFromBytes(pa.Peer)
		if err != nil {
			return GroupUpdate{}, fmt.Errorf("%w: a member's peer ID: %v", ErrProtocol, err)
		}
		as, err := addrsOf(pa.Addrs)
		if err != nil {
			return GroupUpdate{}, err
		}
		u.Addrs = append(u.Addrs, peer.AddrInfo{ID: id, Addrs: as})
	}
	return u, nil
}

func addrsOf(raw [][]byte) ([]ma.Multiaddr, error) {
	if len(raw) > maxMemberAddrs {
		return nil, fmt.Errorf("%w: %d addresses of one peer, at most %d", ErrProtocol, len(raw), maxMemberAddrs)
	}
	out := make([]ma.Multiaddr, 0, len(raw))
	for _, b := range raw {
		if len(b) > maxAddrBytes {
			return nil, fmt.Errorf("%w: an address of %d bytes", ErrProtocol, len(b))
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%w: an address: %v", ErrProtocol, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func wireAddrs(ais []peer.AddrInfo) []PeerAddrs {
	var out []PeerAddrs
	for _, ai := range ais {
		if len(out) == group.MaxMembers {
			break
		}
		pa := PeerAddrs{Peer: []byte(ai.ID), Addrs: [][]byte{}}
		for _, a := range ai.Addrs {
			if len(pa.Addrs) < maxMemberAddrs && len(a.Bytes()) <= maxAddrBytes {
				pa.Addrs = append(pa.Addrs, a.Bytes())
			}
		}
		out = append(out, pa)
	}
	return out
}
