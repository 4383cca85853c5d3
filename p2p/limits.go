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
//	protocol  streams (all peers)  streams per peer  memory (all peers)  memory per peer
//	have              256                 8               16 MiB              2 MiB
//	info              128                 4              256 MiB            192 MiB (indexes are big)
//	chunks            512                32              512 MiB             64 MiB
//	manifest           64                 4               64 MiB             64 MiB
//	join               16                 1                8 MiB              2 MiB
//	group              64                 2               32 MiB              4 MiB
//	haves             256                 4               64 MiB              8 MiB
//
// Every byte a node buffers for a peer is reserved against the stream's
// scope first, serving or asking, so the memory columns are enforced, not
// advisory: a request as it is read, an info or manifest answer twice (as
// built and encoded), a chunks stream's write buffer and each answer it
// reads ahead (a chunk costs a whole chunk.MaxSize buffer). A reservation that
// does not fit waits for other streams to free memory, up to memoryWait,
// then the stream is reset. At ReservationPriorityMedium a reservation may
// fill 153/256 of a limit, so one peer holding chunks streams open without
// reading them gets about 38 MiB of answers buffered, and all peers 306
// MiB. 32 chunk streams per peer leave room for a deep pipeline from a
// fast peer; honest transfers use one or two. A client charges the answers
// it reads the same way, so asking every peer at once for a manifest holds
// at most two answers of the full 16 MiB at a time.
//
// A new stream waits in the transient scope, which all peers share, until
// its protocol is negotiated (up to 10 s). A peer's inbound streams are
// capped at the sum of the per-peer column plus 32 for libp2p's own
// protocols (identify, ping, the DHT): 83, below the smallest autoscaled
// transient limit (128), so one peer opening streams it never negotiates
// cannot take every transient slot.
var protocolLimits = []struct {
	proto       protocol.ID
	streams     int
	streamsPeer int
	memory      int64
	memoryPeer  int64
}{
	{ProtoHave, 256, 8, 16 << 20, 2 << 20},
	{ProtoInfo, 128, 4, 256 << 20, 4 * MaxInfoResponse},
	{ProtoChunks, 512, 32, 512 << 20, 64 << 20},
	{ProtoManifest, 64, 4, 4 * MaxManifestBytes, 4 * MaxManifestBytes},
	{ProtoJoin, 16, 1, 8 << 20, 2 * maxGroupMessage},
	{ProtoGroup, 64, 2, 32 << 20, 4 * maxGroupMessage},
	{ProtoHaves, 256, 4, 64 << 20, 8 << 20},
}

func newLimiter() rcmgr.Limiter {
	cfg := rcmgr.DefaultLimits
	peerIn := 32
	for _, l := range protocolLimits {
		peerIn += l.streamsPeer
		base := rcmgr.BaseLimit{
			Streams: l.streams, StreamsInbound: l.streams, StreamsOutbound: l.streams, Memory: l.memory,
		}
		peerBase := rcmgr.BaseLimit{
			Streams: l.streamsPeer, StreamsInbound: l.streamsPeer, StreamsOutbound: l.streamsPeer, Memory: l.memoryPeer,
		}
		cfg.AddProtocolLimit(l.proto, base, rcmgr.BaseLimitIncrease{})
		cfg.AddProtocolPeerLimit(l.proto, peerBase, rcmgr.BaseLimitIncrease{})
	}
	cfg.PeerBaseLimit.StreamsInbound = peerIn
	cfg.PeerLimitIncrease.StreamsInbound = 0
	// One stream's (and one peer's) memory must admit the largest info
	// answer the handler reserves, twice MaxInfoResponse. At
	// ReservationPriorityMedium a reservation may fill only 153/256 of a
	// limit, so libp2p's default of 16 MiB refused any answer over 9.5
	// MiB; 4×MaxInfoResponse admits 115 MiB. The protocol and per-peer
	// limits above still bound the total.
	cfg.StreamBaseLimit.Memory = max(cfg.StreamBaseLimit.Memory, 4*MaxInfoResponse)
	cfg.PeerBaseLimit.Memory = max(cfg.PeerBaseLimit.Memory, 4*MaxInfoResponse)
	return rcmgr.NewFixedLimiter(cfg.AutoScale())
}
