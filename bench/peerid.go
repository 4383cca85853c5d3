package bench

import "github.com/libp2p/go-libp2p/core/peer"

func peerID(s string) (peer.ID, error) { return peer.Decode(s) }
