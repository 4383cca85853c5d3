package p2p

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/strictcbor"
)

// The fleet view: each follower tells its trust group where it stands
// with every configuration it follows, as announcements travel: straight
// to each connected member (ProtoFleet) and gossiped on one topic for the
// rest. A status speaks only for the machine that sent it: there is no
// peer field to forge; its author is the peer whose key signed the gossip
// message (gossipsub's strict signing) or the far end of the
// authenticated stream, and it must be a member. A status is small and
// bounded (maxFleetStatus bytes, maxFleetFailed failed generations).

// ProtoFleet carries one follower's status straight to a member.
const ProtoFleet = "/trove/fleet/1.0.0"

// fleetTopic is the gossipsub topic of fleet statuses.
const fleetTopic = "/trove/fleet/1"

const (
	maxFleetStatus = 2 << 10
	// MaxFleetFailed bounds the failed generations a status lists (the newest).
	MaxFleetFailed = 16
	maxFleetText   = 256
)

var decFleet = strictcbor.MustDecoder(strictcbor.Limits{Wire: maxFleetStatus, Items: 64, Array: MaxFleetFailed, MapPairs: 16, Nested: 2})

// FleetStatus is what a follower says of one configuration it follows.
type FleetStatus struct {
	Name     string `cbor:"1,keyasint"`
	Current  uint64 `cbor:"2,keyasint"`           // the profile's generation
	Newest   uint64 `cbor:"3,keyasint,omitempty"` // the newest known there
	Phase    string `cbor:"4,keyasint"`           // agent.Phase*
	HeldBack bool   `cbor:"5,keyasint,omitempty"`
	// The last activation: its generation, result (profile.Activation*),
	// when it ended (Unix ms), and its error if any.
	LastGen    uint64 `cbor:"6,keyasint,omitempty"`
	LastResult string `cbor:"7,keyasint,omitempty"`
	LastAt     int64  `cbor:"8,keyasint,omitempty"`
	LastError  string `cbor:"9,keyasint,omitempty"`
	// Failed are generations that failed there (rolled back), newest last.
	Failed []uint64 `cbor:"10,keyasint,omitempty"`
	Sent   int64    `cbor:"11,keyasint"` // Unix ms, by the sender's clock
	// Pending says a switch waits (for a window, or the next boot).
	Pending string `cbor:"12,keyasint,omitempty"`
}

func (s *FleetStatus) check() error {
	switch {
	case s.Name == "" || len(s.Name) > 64:
		return fmt.Errorf("%w: a fleet status for %q", ErrProtocol, s.Name)
	case len(s.Phase) > 32 || len(s.LastResult) > 32 || len(s.Pending) > 64 || len(s.LastError) > maxFleetText:
		return fmt.Errorf("%w: a fleet status with an oversized field", ErrProtocol)
	case len(s.Failed) > MaxFleetFailed:
		return fmt.Errorf("%w: a fleet status with %d failed generations, at most %d", ErrProtocol, len(s.Failed), MaxFleetFailed)
	}
	return nil
}

// decodeFleet decodes and checks a status from outside.
func decodeFleet(b []byte) (FleetStatus, error) {
	var s FleetStatus
	if len(b) > maxFleetStatus {
		return s, fmt.Errorf("%w: a fleet status of %d bytes, at most %d", ErrProtocol, len(b), maxFleetStatus)
	}
	if err := decFleet.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return s, s.check()
}

// fleet holds the handler of statuses and the topic.
type fleet struct {
	mu      sync.Mutex
	handler func(from peer.ID, s FleetStatus)
	topic   *pubsub.Topic
}

// OnFleet calls fn with every status a member sends, gossiped or direct,
// until ctx ends (one handler per node). fn must not block for long.
func (n *Node) OnFleet(ctx context.Context, fn func(from peer.ID, s FleetStatus)) error {
	t, err := n.fleetTopic()
	if err != nil {
		return err
	}
	n.fleet.mu.Lock()
	n.fleet.handler = fn
	n.fleet.mu.Unlock()
	return n.gossip(ctx, t, func(msg *pubsub.Message) {
		author := msg.GetFrom()
		if author == n.host.ID() || !n.gater.trust.Contains(author) {
			return
		}
		if s, err := decodeFleet(msg.Data); err == nil {
			fn(author, s)
		}
	}, nil)
}

func (n *Node) fleetTopic() (*pubsub.Topic, error) {
	n.fleet.mu.Lock()
	defer n.fleet.mu.Unlock()
	if n.fleet.topic != nil {
		return n.fleet.topic, nil
	}
	t, err := n.ps.Join(fleetTopic)
	if err != nil {
		return nil, err
	}
	n.fleet.topic = t
	return t, nil
}

// TellFleet sends s to every connected member directly and gossips it
// for the others.
func (n *Node) TellFleet(ctx context.Context, s FleetStatus) error {
	if err := s.check(); err != nil {
		return err
	}
	t, err := n.fleetTopic()
	return n.tellMembers(ctx, ProtoFleet, &s, t, err)
}

// handleFleet takes a status sent directly by a member.
func (s *server) handleFleet(ctx context.Context, st network.Stream, r *bufio.Reader) error {
	from := st.Conn().RemotePeer()
	if !s.node.gater.trust.Contains(from) {
		return nil
	}
	st.SetReadDeadline(time.Now().Add(announceTimeout))
	var fs FleetStatus
	if err := readMsg(r, maxFleetStatus, &fs); err != nil {
		return err
	}
	if err := fs.check(); err != nil {
		return err
	}
	s.node.fleet.mu.Lock()
	fn := s.node.fleet.handler
	s.node.fleet.mu.Unlock()
	if fn != nil {
		fn(from, fs)
	}
	return nil
}
