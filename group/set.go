package group

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Set is one member's view of the group: the newest record of each peer
// it has heard of, members and removed members alike (a removal is kept,
// so that an older addition arriving late cannot undo it). A Set is not
// safe for concurrent use; its owner locks.
//
// The rules every member applies, so that all converge on the same set:
//   - A record is accepted only with a valid signature by a peer that is a
//     member in this set at that moment (Merge), or, for a machine joining,
//     a member in the inviter's set (Adopt).
//   - Of two records of a peer, the one that beats (beats) wins: the higher
//     version, then removal over addition, then a fixed order.
//   - A peer's own signature never undoes its removal, whatever the version;
//     only another member can add it again.
//   - A change is signed at one above the highest version in the set, so a
//     removal made after an addition was seen always wins over it.
type Set struct {
	recs map[peer.ID]Record
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{recs: map[peer.ID]Record{}} }

// Len is the number of records, removed members included.
func (s *Set) Len() int { return len(s.recs) }

// Get returns p's record.
func (s *Set) Get(p peer.ID) (Record, bool) {
	r, ok := s.recs[p]
	return r, ok
}

// Live reports whether p is a member: it has a record that is not a removal.
func (s *Set) Live(p peer.ID) bool {
	r, ok := s.recs[p]
	return ok && !r.Removed
}

// Records returns every record, ordered by peer.
func (s *Set) Records() []Record {
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return bytes.Compare(a.Peer, b.Peer) })
	return out
}

// NextVersion is the version of the next change: one above every version
// in the set.
func (s *Set) NextVersion() uint64 {
	v := uint64(0)
	for _, r := range s.recs {
		v = max(v, r.Version)
	}
	return v + 1
}

// RemovedError says that this machine was removed from the group, so it
// can sign no more changes.
type RemovedError struct{ By peer.ID }

func (e *RemovedError) Error() string {
	return fmt.Sprintf("this machine was removed from the group by %s: it can change nothing; join again with a new invitation (trove join TOKEN)", e.By)
}

// Change records, signed by key, that p is a member named name, or with
// removed that it no longer is. The signer becomes a member first if the
// set has never heard of it (the first member of a group vouches for
// itself). It returns the records made.
func (s *Set) Change(key crypto.PrivKey, p peer.ID, name string, removed bool, now time.Time) ([]Record, error) {
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	var made []Record
	if cur, ok := s.recs[self]; ok && cur.Removed {
		return nil, &RemovedError{By: cur.Signer()}
	} else if !ok {
		if len(s.recs) >= MaxMembers {
			return nil, fmt.Errorf("the group holds %d records, the most it may", MaxMembers)
		}
		r, err := Sign(key, self, "", false, s.NextVersion(), now)
		if err != nil {
			return nil, err
		}
		s.recs[self] = r
		made = append(made, r)
	}
	if p == self {
		if removed {
			return made, errors.New("a machine cannot remove itself: run trove group remove on another member")
		}
		if cur := s.recs[self]; cur.Name == name {
			return made, nil
		}
	}
	if _, ok := s.recs[p]; !ok && len(s.recs) >= MaxMembers {
		return made, fmt.Errorf("the group holds %d records, the most it may", MaxMembers)
	}
	r, err := Sign(key, p, name, removed, s.NextVersion(), now)
	if err != nil {
		return made, err
	}
	s.recs[p] = r
	return append(made, r), nil
}

// verify checks a record's signature (a variable for tests to count).
var verify = (*Record).Verify

// Merge takes records another member sent: each whose signature verifies,
// whose signer is a member (in this set as it grows, or for whom trusted
// says so), and that beats the record held for its peer. Records whose
// signer becomes a member only through another record of the same batch
// are taken too, in any order. It returns the peers whose record changed.
// A record it holds already is not verified again: members push the whole
// set to each other on every change and every connection, so a room of n
// pairing would otherwise check about n³ signatures.
func (s *Set) Merge(in []Record, trusted func(peer.ID) bool) []peer.ID {
	pending := make([]Record, 0, min(len(in), MaxMembers))
	for _, r := range in {
		if len(pending) == MaxMembers {
			break
		}
		if cur, ok := s.recs[r.PeerID()]; ok && cur.equal(&r) {
			continue // held already: nothing to learn, no signature to check
		}
		if verify(&r) == nil {
			pending = append(pending, r)
		}
	}
	// Lower versions first: a signer's own record is usually older than
	// the records it signed.
	slices.SortStableFunc(pending, func(a, b Record) int {
		switch {
		case a.Version < b.Version:
			return -1
		case a.Version > b.Version:
			return 1
		}
		return 0
	})
	var changed []peer.ID
	for {
		progress := false
		rest := pending[:0]
		for _, r := range pending {
			by := r.Signer()
			if !s.Live(by) && (trusted == nil || !trusted(by)) {
				rest = append(rest, r) // its signer may become a member later in the batch
				continue
			}
			p := r.PeerID()
			cur, ok := s.recs[p]
			if ok && !beats(&r, &cur) || !ok && len(s.recs) >= MaxMembers {
				continue
			}
			s.recs[p] = r
			progress = true
			if !slices.Contains(changed, p) {
				changed = append(changed, p)
			}
		}
		pending = rest
		if !progress || len(pending) == 0 {
			return changed
		}
	}
}

// Adopt takes the set of the member that invited this machine, believing
// it as that member does: a record is taken if its signature verifies and
// its signer is a member in the inviter's set (or is the inviter, whom the
// invitation authenticated). A peer's own signature still never undoes a
// removal held here.
func (s *Set) Adopt(in []Record, inviter peer.ID) []peer.ID {
	theirs := map[peer.ID]bool{inviter: true}
	for _, r := range in[:min(len(in), MaxMembers)] {
		if !r.Removed && r.Verify() == nil {
			theirs[r.PeerID()] = true
		}
	}
	return s.Merge(in, func(p peer.ID) bool { return theirs[p] })
}

// Put keeps r if its signature verifies and it beats the record held for
// its peer, whoever signed it: for records read back from this member's
// own file, which were accepted when they came.
func (s *Set) Put(r Record) error {
	if err := r.Verify(); err != nil {
		return err
	}
	p := r.PeerID()
	if cur, ok := s.recs[p]; ok && !beats(&r, &cur) {
		return nil
	}
	if _, ok := s.recs[p]; !ok && len(s.recs) >= MaxMembers {
		return fmt.Errorf("more than %d records", MaxMembers)
	}
	s.recs[p] = r
	return nil
}
