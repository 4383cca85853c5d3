package agent

import (
	"fmt"
	"strings"
	"time"
)

// When is when a follower switches to a fetched generation.
type When struct {
	Boot bool
	// A daily window of local time, [From, To) in minutes after
	// midnight; To < From wraps past midnight. Both zero: now.
	From, To int
}

// ParseWhen parses --when: "" or "now", "boot", or "HH:MM-HH:MM".
func ParseWhen(s string) (When, error) {
	switch s {
	case "", "now":
		return When{}, nil
	case "boot":
		return When{Boot: true}, nil
	}
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return When{}, fmt.Errorf("--when %q: want now, boot, or a window such as 02:00-05:00", s)
	}
	f, err1 := clock(from)
	t, err2 := clock(to)
	if err1 != nil || err2 != nil || f == t {
		return When{}, fmt.Errorf("--when %q: want a window such as 02:00-05:00 (24-hour local times, start and end differ)", s)
	}
	return When{From: f, To: t}, nil
}

func clock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil || len(s) != 5 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// window says whether w is a window (not now, not boot).
func (w When) window() bool { return w.From != w.To }

// open says whether now is inside w's window, and if not, how long until
// it opens.
func (w When) open(now time.Time) (bool, time.Duration) {
	if !w.window() {
		return true, 0
	}
	m := now.Hour()*60 + now.Minute()
	in := w.From <= m && m < w.To
	if w.To < w.From {
		in = m >= w.From || m < w.To
	}
	if in {
		return true, 0
	}
	start := time.Date(now.Year(), now.Month(), now.Day(), w.From/60, w.From%60, 0, 0, now.Location())
	if !start.After(now) {
		start = start.AddDate(0, 0, 1)
	}
	return false, start.Sub(now)
}

func (w When) String() string {
	switch {
	case w.Boot:
		return "boot"
	case w.window():
		return fmt.Sprintf("%02d:%02d-%02d:%02d", w.From/60, w.From%60, w.To/60, w.To%60)
	}
	return "now"
}
