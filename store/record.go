package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
)

// pathInfoRecord is the stored form of a PathInfo in Badger.
type pathInfoRecord struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references,omitempty"`
	Deriver    string   `json:"deriver,omitempty"`
	Sigs       []string `json:"sigs,omitempty"`
	CA         string   `json:"ca,omitempty"`
	RegTime    int64    `json:"regTime"`
	Ultimate   bool     `json:"ultimate,omitempty"`
	ChunkIndex string   `json:"chunkIndex"`
}

func encodePathInfo(pi *nix.PathInfo) []byte {
	r := pathInfoRecord{
		Path: pi.Path.String(), NarHash: pi.NarHash.String(), NarSize: pi.NarSize,
		References: pi.RefNames(), Deriver: pi.DeriverName(),
		Sigs: pi.Sigs, CA: pi.CA, RegTime: pi.RegistrationTime.Unix(), Ultimate: pi.Ultimate,
		ChunkIndex: pi.ChunkIndex.String(),
	}
	b, _ := json.Marshal(r) // cannot fail: strings and numbers
	return b
}

func decodePathInfo(b []byte) (*nix.PathInfo, error) {
	var r pathInfoRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("corrupt path info in the store database: %w", err)
	}
	h, err := nix.ParseHash(r.NarHash)
	if err != nil {
		return nil, err
	}
	pi, err := nix.PathInfoFromNames(r.Path, h[:], r.NarSize, r.References, r.Deriver)
	if err != nil {
		return nil, err
	}
	pi.Sigs, pi.CA, pi.RegistrationTime, pi.Ultimate = r.Sigs, r.CA, time.Unix(r.RegTime, 0), r.Ultimate
	if pi.ChunkIndex, err = chunk.ParseID(r.ChunkIndex); err != nil {
		return nil, err
	}
	return pi, nil
}
