package group

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Defaults and bounds of invitations.
const (
	DefaultUses    = 1
	DefaultExpires = time.Hour
	MaxUses        = 1000
	MaxExpires     = 30 * 24 * time.Hour
	// MaxOpen is the most invitations a member holds at once.
	MaxOpen = 64
	// keepClosed is how long a used-up or expired invitation is remembered,
	// so that presenting it again gets "used" or "expired" rather than
	// "unknown".
	keepClosed = 24 * time.Hour
)

// Invite is an invitation a member holds: the SHA-256 of its secret (never
// the secret), how many joins it admits and until when.
type Invite struct {
	ID      string    `json:"id"`
	Hash    []byte    `json:"hash"`
	Uses    int       `json:"uses"`
	Used    int       `json:"used"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Revoked bool      `json:"revoked,omitempty"`
}

// Open reports whether the invitation admits a join at now.
func (iv *Invite) Open(now time.Time) bool {
	return !iv.Revoked && iv.Used < iv.Uses && now.Before(iv.Expires)
}

// RefusedError says why an invitation was refused; its message is what
// the joining machine is told.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// Invites are a member's invitations, kept in a file (mode 0600) so that
// open ones outlive a restart. Safe for concurrent use.
type Invites struct {
	path string
	mu   sync.Mutex
	list []Invite
}

// InvitesPath is the invitations file of a home.
func InvitesPath(home string) string { return filepath.Join(home, "invites.json") }

// OpenInvites reads the invitations file; a missing file holds none.
func OpenInvites(path string) (*Invites, error) {
	iv := &Invites{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return iv, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &iv.list); err != nil {
		return nil, fmt.Errorf("%s: %w (move it away to drop every invitation)", path, err)
	}
	return iv, nil
}

// Create makes an invitation admitting uses joins until now+expires, and
// returns its secret, which is not kept.
func (b *Invites) Create(uses int, expires time.Duration, now time.Time) ([SecretLen]byte, Invite, error) {
	var zero [SecretLen]byte
	if uses < 1 || uses > MaxUses {
		return zero, Invite{}, fmt.Errorf("--uses must be 1 to %d, not %d", MaxUses, uses)
	}
	if expires <= 0 || expires > MaxExpires {
		return zero, Invite{}, fmt.Errorf("--expires must be above 0 and at most %v, not %v", MaxExpires, expires)
	}
	secret, err := NewSecret()
	if err != nil {
		return zero, Invite{}, err
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return zero, Invite{}, err
	}
	h := SecretHash(secret[:])
	iv := Invite{ID: hex.EncodeToString(id[:]), Hash: h[:], Uses: uses, Created: now.UTC(), Expires: now.Add(expires).UTC()}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(now)
	open := 0
	for i := range b.list {
		if b.list[i].Open(now) {
			open++
		}
	}
	if open >= MaxOpen {
		return zero, Invite{}, fmt.Errorf("%d invitations are open, the most a member holds: revoke some (trove invite list, trove invite revoke ID)", open)
	}
	b.list = append(b.list, iv)
	if err := b.save(); err != nil {
		b.list = b.list[:len(b.list)-1]
		return zero, Invite{}, err
	}
	return secret, iv, nil
}

// Redeem uses up one join of the invitation whose secret this is, and
// saves that before it returns: a use is spent even if the join fails
// later. The secret's hash is compared with every invitation's in constant
// time. A refusal is a *RefusedError.
func (b *Invites) Redeem(secret []byte, now time.Time) (Invite, error) {
	h := SecretHash(secret)
	b.mu.Lock()
	defer b.mu.Unlock()
	found := -1
	for i := range b.list {
		if subtle.ConstantTimeCompare(h[:], b.list[i].Hash) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Invite{}, &RefusedError{"the invitation is not known to this member: the token is wrong, or it was revoked or issued long ago; ask a member for a new one (trove invite)"}
	}
	iv := &b.list[found]
	switch {
	case iv.Revoked:
		return *iv, &RefusedError{"the invitation was revoked; ask a member for a new one (trove invite)"}
	case iv.Used >= iv.Uses:
		return *iv, &RefusedError{fmt.Sprintf("the invitation was already used (%d of %d uses); ask a member for a new one (trove invite)", iv.Used, iv.Uses)}
	case !now.Before(iv.Expires):
		return *iv, &RefusedError{fmt.Sprintf("the invitation expired at %s; ask a member for a new one (trove invite --expires for a longer one)", iv.Expires.Format(time.RFC3339))}
	}
	iv.Used++
	if err := b.save(); err != nil {
		iv.Used--
		return Invite{}, fmt.Errorf("recording the use of an invitation: %w", err)
	}
	return *iv, nil
}

// AnyOpen reports whether some invitation admits a join at now.
func (b *Invites) AnyOpen(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(b.list, func(iv Invite) bool { return iv.Open(now) })
}

// List returns the invitations remembered, oldest first.
func (b *Invites) List(now time.Time) []Invite {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(now)
	return slices.Clone(b.list)
}

// Revoke closes the invitation with this ID; it reports whether there was one.
func (b *Invites) Revoke(id string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.list {
		if b.list[i].ID == id && !b.list[i].Revoked {
			b.list[i].Revoked = true
			return true, b.save()
		}
	}
	return false, nil
}

// prune forgets invitations closed for longer than keepClosed.
func (b *Invites) prune(now time.Time) {
	b.list = slices.DeleteFunc(b.list, func(iv Invite) bool {
		return !iv.Open(now) && now.Sub(iv.Expires) > keepClosed
	})
}

func (b *Invites) save() error {
	out, err := json.MarshalIndent(b.list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
		return err
	}
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, b.path)
}
