package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/trove-p2p/trove/strictcbor"
)

// Configurations travel two ways: the manifest protocol answers "the
// newest (or Nth) manifest of NAME" with the signed bytes, and small
// announcements of new generations go to every connected trust-group peer
// directly (the announce protocol) and, for peers further away, on a
// gossipsub topic per name. Gossip alone is not enough: a peer whose
// gossipsub stream failed to open is left out of the topic until it
// reconnects, and that happens under load. Neither is trusted: a follower
// verifies every manifest it fetches, and an announcement is only a hint
// to go and fetch.

// ProtoManifest serves signed manifests.
const ProtoManifest = "/trove/manifest/1.0.0"

// ProtoAnnounce carries one announcement straight to a connected peer.
const ProtoAnnounce = "/trove/announce/1.0.0"

// announceTimeout bounds the direct delivery of an announcement to a peer.
const announceTimeout = 5 * time.Second

// MaxManifestBytes caps a manifest on the wire: manifest.MaxManifestSize.
const MaxManifestBytes = 16 << 20

// maxAnnouncement caps a gossiped announcement.
const maxAnnouncement = 1 << 10

// ManifestRequest asks for generation Generation of Name (0 = newest).
type ManifestRequest struct {
	Name       string `cbor:"1,keyasint"`
	Generation uint64 `cbor:"2,keyasint,omitempty"`
}

// ManifestResponse carries the signed manifest, empty when unknown. The
// manifest decodes in place, not as a copy of the answer's bytes.
type ManifestResponse struct {
	Manifest strictcbor.Bytes `cbor:"1,keyasint,omitempty"`
}

// Announcement says a generation of a configuration exists.
type Announcement struct {
	Name       string `cbor:"1,keyasint"`
	Generation uint64 `cbor:"2,keyasint"`
	ID         []byte `cbor:"3,keyasint"` // the manifest's ID
}

// ManifestSource is what the manifest protocol answers from.
type ManifestSource interface {
	// ManifestBytes returns generation gen (0 = newest) of name, or an
	// error if it is not known here.
	ManifestBytes(name string, gen uint64) ([]byte, error)
}

func (s *server) handleManifest(ctx context.Context, st network.Stream, req *ManifestRequest) error {
	// A manifest's size is known only once it is loaded: loads take turns,
	// and each is charged to its stream before the next begins, so at
	// most one manifest is held uncharged.
	lctx, cancel := context.WithTimeout(ctx, s.memWait)
	defer cancel()
	if err := s.loads.Acquire(lctx, 1); err != nil {
		return fmt.Errorf("waiting to load a manifest: %w", err)
	}
	var resp ManifestResponse
	if b, err := s.manifests.ManifestBytes(req.Name, req.Generation); err == nil && len(b) <= MaxManifestBytes {
		resp.Manifest = b
	}
	n := 2 * len(resp.Manifest) // held, and encoded
	err := s.reserver(ctx, st)(n)
	s.loads.Release(1)
	if err != nil {
		return fmt.Errorf("manifest answer: %w", err)
	}
	defer st.Scope().ReleaseMemory(n)
	st.SetWriteDeadline(time.Now().Add(s.write))
	return writeMsg(st, &resp)
}

// ErrNoManifest means the peer does not know that configuration generation.
var ErrNoManifest = errors.New("peer has no such manifest")

// Manifest asks p for generation gen (0 = newest) of name.
func (n *Node) Manifest(ctx context.Context, p peer.ID, name string, gen uint64) ([]byte, error) {
	var resp ManifestResponse
	if err := n.roundTrip(ctx, p, ProtoManifest, &ManifestRequest{Name: name, Generation: gen}, MaxManifestBytes+64, &resp); err != nil {
		return nil, err
	}
	if len(resp.Manifest) == 0 {
		return nil, fmt.Errorf("%s@%d from %s: %w", name, gen, p, ErrNoManifest)
	}
	return resp.Manifest, nil
}

func topicName(name string) string { return "/trove/config/" + name }

// topics holds joined gossipsub topics, and the subscribers that direct
// announcements go to.
type topics struct {
	mu      sync.Mutex
	joined  map[string]*pubsub.Topic
	handler map[string]func(from peer.ID, a Announcement)
}

func (n *Node) topic(name string) (*pubsub.Topic, error) {
	n.topics.mu.Lock()
	defer n.topics.mu.Unlock()
	if t, ok := n.topics.joined[name]; ok {
		return t, nil
	}
	t, err := n.ps.Join(topicName(name))
	if err != nil {
		return nil, err
	}
	if n.topics.joined == nil {
		n.topics.joined = map[string]*pubsub.Topic{}
	}
	n.topics.joined[name] = t
	return t, nil
}

// Announce tells every connected trust-group peer of a new generation
// directly, and publishes it on name's topic for the rest. It fails only
// if neither way could be tried.
func (n *Node) Announce(ctx context.Context, a Announcement) error {
	t, err := n.topic(a.Name)
	return n.tellMembers(ctx, ProtoAnnounce, &a, t, err)
}

// tellMembers sends msg to every connected member of the trust group
// directly (proto), and publishes it on t for the others (unless joining
// t failed with terr). It fails only if the gossip could not be tried.
func (n *Node) tellMembers(ctx context.Context, proto protocol.ID, msg any, t *pubsub.Topic, terr error) error {
	b, err := strictcbor.Marshal(msg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, p := range n.ConnectedPeers() {
		if !n.gater.trust.Contains(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.tellOne(ctx, p, proto, msg); err != nil {
				n.log.Debug("telling a member directly failed; gossip still carries it", "peer", p, "protocol", proto, "err", err)
			}
		}()
	}
	if terr == nil {
		terr = t.Publish(ctx, b)
	}
	wg.Wait()
	return terr
}

// tellOne sends msg to p on a stream of proto.
func (n *Node) tellOne(ctx context.Context, p peer.ID, proto protocol.ID, msg any) error {
	return n.exchange(ctx, p, proto, announceTimeout, func(_ context.Context, st network.Stream) error { return writeMsg(st, msg) })
}

// handleAnnounce takes a direct announcement to the subscriber of its name.
// Only trust-group peers may announce directly, whoever may fetch.
func (s *server) handleAnnounce(ctx context.Context, st network.Stream, r *bufio.Reader) error {
	if !s.node.gater.trust.Contains(st.Conn().RemotePeer()) {
		return nil
	}
	st.SetReadDeadline(time.Now().Add(announceTimeout))
	var a Announcement
	if err := readMsg(r, maxAnnouncement, &a); err != nil {
		return err
	}
	if len(a.ID) != 32 {
		return fmt.Errorf("%w: an announcement's manifest ID has %d bytes, not 32", ErrProtocol, len(a.ID))
	}
	s.node.topics.mu.Lock()
	fn := s.node.topics.handler[a.Name]
	s.node.topics.mu.Unlock()
	if fn != nil {
		fn(st.Conn().RemotePeer(), a)
	}
	return nil
}

// Subscribe calls fn with each announcement of name, gossiped or sent
// directly, until ctx ends; one subscriber per name. Malformed
// announcements are dropped. The same announcement may come both ways.
func (n *Node) Subscribe(ctx context.Context, name string, fn func(from peer.ID, a Announcement)) error {
	t, err := n.topic(name)
	if err != nil {
		return err
	}
	n.topics.mu.Lock()
	if n.topics.handler == nil {
		n.topics.handler = map[string]func(peer.ID, Announcement){}
	}
	n.topics.handler[name] = fn
	n.topics.mu.Unlock()
	unset := func() {
		n.topics.mu.Lock()
		delete(n.topics.handler, name)
		n.topics.mu.Unlock()
	}
	err = n.gossip(ctx, t, func(msg *pubsub.Message) {
		if a, err := decodeAnnouncement(msg.Data, name); err == nil {
			fn(msg.ReceivedFrom, a)
		}
	}, unset)
	if err != nil {
		unset()
	}
	return err
}

// gossip calls fn with each message on t that another node sent, until
// ctx ends, then done (if not nil).
func (n *Node) gossip(ctx context.Context, t *pubsub.Topic, fn func(*pubsub.Message), done func()) error {
	sub, err := t.Subscribe()
	if err != nil {
		return err
	}
	go func() {
		if done != nil {
			defer done()
		}
		defer sub.Cancel()
		for {
			msg, err := sub.Next(ctx)
			if err != nil {
				return
			}
			if msg.ReceivedFrom != n.host.ID() {
				fn(msg)
			}
		}
	}()
	return nil
}

// decodeAnnouncement decodes a gossiped announcement on name's topic.
func decodeAnnouncement(b []byte, name string) (Announcement, error) {
	var a Announcement
	if len(b) > maxAnnouncement {
		return a, fmt.Errorf("%w: an announcement of %d bytes, at most %d", ErrProtocol, len(b), maxAnnouncement)
	}
	if err := decodeMsg(b, &a); err != nil {
		return a, err
	}
	if a.Name != name || len(a.ID) != 32 {
		return a, fmt.Errorf("%w: an announcement of %q with a %d-byte ID on the topic of %q", ErrProtocol, a.Name, len(a.ID), name)
	}
	return a, nil
}
