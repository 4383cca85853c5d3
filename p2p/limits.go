package p2p

import (
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// Resource limits for trove's protocols, on top of libp2p's autoscaled
// defaults for the system, transient and connection scopes. Each protocol
// has a scope of its own, so a peer flooding `have` cannot starve `chunks`,
// and a per-peer cap inside it, so one greedy peer cannot starve the others.
//
//	protocol  streams (all peers)  streams per peer  memory (all peers)
//	have              256                 8               16 MiB
//	info              128                 4              256 MiB (indexes are big)
//	chunks            512                32              512 MiB
//
// Handlers reserve the memory of each message they buffer against the
// stream's scope, so the memory column is enforced, not advisory. 32 chunk
// streams per peer leave room for a deep pipeline from a fast peer; honest
// transfers use one or two.
var protocolLimits = []struct {
	proto       protocol.ID
	streams     int
	streamsPeer int
	memory      int64
	memoryPeer  int64
}{
	{ProtoHave, 256, 8, 16 << 20, 2 << 20},
	{ProtoInfo, 128, 4, 256 << 20, 2 * MaxInfoResponse},
	{ProtoChunks, 512, 32, 512 << 20, 64 << 20},
}

func newLimiter() rcmgr.Limiter {
	cfg := rcmgr.DefaultLimits
	for _, l := range protocolLimits {
		base := rcmgr.BaseLimit{
			Streams: l.streams, StreamsInbound: l.streams, StreamsOutbound: l.streams, Memory: l.memory,
		}
		peerBase := rcmgr.BaseLimit{
			Streams: l.streamsPeer, StreamsInbound: l.streamsPeer, StreamsOutbound: l.streamsPeer, Memory: l.memoryPeer,
		}
		cfg.AddProtocolLimit(l.proto, base, rcmgr.BaseLimitIncrease{})
		cfg.AddProtocolPeerLimit(l.proto, peerBase, rcmgr.BaseLimitIncrease{})
	}
	return rcmgr.NewFixedLimiter(cfg.AutoScale())
}
