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
		Sigs: pi.Sigs, CA: pi.CA, RegTime: pi.RegistrationTime.Unix(), Ultimate: pi.Ultimate,
		ChunkIndex: pi.ChunkIndex.String(),
	}
	for _, ref := range pi.References {
		r.References = append(r.References, ref.String())
	}
	if !pi.Deriver.IsZero() {
		r.Deriver = pi.Deriver.String()
	}
	b, _ := json.Marshal(r) // cannot fail: strings and numbers
	return b
}

func decodePathInfo(b []byte) (*nix.PathInfo, error) {
	var r pathInfoRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("corrupt path info in the store database: %w", err)
	}
	pi := &nix.PathInfo{NarSize: r.NarSize, Sigs: r.Sigs, CA: r.CA, RegistrationTime: time.Unix(r.RegTime, 0), Ultimate: r.Ultimate}
	var err error
	if pi.Path, err = nix.ParseBase(r.Path); err != nil {
		return nil, err
	}
	if pi.NarHash, err = nix.ParseHash(r.NarHash); err != nil {
		return nil, err
	}
	for _, s := range r.References {
		ref, err := nix.ParseBase(s)
		if err != nil {
			return nil, err
		}
		pi.References = append(pi.References, ref)
	}
	if r.Deriver != "" {
		if pi.Deriver, err = nix.ParseBase(r.Deriver); err != nil {
			return nil, err
		}
	}
	if pi.ChunkIndex, err = chunk.ParseID(r.ChunkIndex); err != nil {
		return nil, err
	}
	return pi, nil
}
