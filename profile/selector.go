package profile

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A Selector picks generations of a profile to delete, as `trove
// generations delete` takes them: a number (N), those older than N days
// (Nd), or all but the newest N (+N).
type Selector struct {
	Number   uint64 `json:"number,omitempty"`
	OlderDay int    `json:"olderThanDays,omitempty"`
	Days     bool   `json:"days,omitempty"` // OlderDay is set (0d is every generation)
	Keep     int    `json:"keep,omitempty"`
}

// SelectorError is a selector that does not parse; its message says what
// a valid one looks like.
type SelectorError struct{ msg string }

func (e *SelectorError) Error() string { return e.msg }

// ParseSelector parses N, Nd or +N.
func ParseSelector(arg string) (Selector, error) {
	switch {
	case strings.HasSuffix(arg, "d"):
		days, err := strconv.Atoi(strings.TrimSuffix(arg, "d"))
		if err != nil || days < 0 {
			return Selector{}, &SelectorError{fmt.Sprintf("%q: want a number of days like 30d", arg)}
		}
		return Selector{OlderDay: days, Days: true}, nil
	case strings.HasPrefix(arg, "+"):
		keep, err := strconv.Atoi(arg[1:])
		if err != nil || keep < 1 {
			return Selector{}, &SelectorError{fmt.Sprintf("%q: want +N with N ≥ 1", arg)}
		}
		return Selector{Keep: keep}, nil
	default:
		n, err := strconv.ParseUint(arg, 10, 64)
		if err != nil || n == 0 {
			return Selector{}, &SelectorError{fmt.Sprintf("%q: want a generation number, Nd or +N", arg)}
		}
		return Selector{Number: n}, nil
	}
}

// Select returns the numbers of the generations s picks among gens
// (oldest first, as Profiles.Generations lists them) at time now. A
// generation given by number is picked even if it is current (Delete
// refuses it); the others never pick the current one.
func (s Selector) Select(gens []Generation, now time.Time) []uint64 {
	var out []uint64
	switch {
	case s.Days:
		cutoff := now.Add(-time.Duration(s.OlderDay) * 24 * time.Hour)
		for _, g := range gens {
			if g.Created.Before(cutoff) && !g.Current {
				out = append(out, g.Number)
			}
		}
	case s.Keep > 0:
		for i, g := range gens {
			if i < len(gens)-s.Keep && !g.Current {
				out = append(out, g.Number)
			}
		}
	default:
		out = append(out, s.Number)
	}
	return out
}

// RollbackTarget chooses the generation a rollback switches to: to if it
// is set, else the newest generation before current.
func RollbackTarget(name string, gens []Generation, current, to uint64) (uint64, error) {
	if to != 0 {
		return to, nil
	}
	target := uint64(0)
	for _, g := range gens {
		if g.Number < current {
			target = g.Number
		}
	}
	if target == 0 {
		return 0, fmt.Errorf("%s has no generation before %d to roll back to (see trove generations %s)", name, current, name)
	}
	return target, nil
}
