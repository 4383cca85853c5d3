package agent

import (
	"testing"
	"time"
)

func TestWhen(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 2, h, m, 0, 0, time.Local) }
	for _, tc := range []struct {
		when    string
		now     time.Time
		open    bool
		opensIn time.Duration
		err     bool
	}{
		{when: "", now: at(12, 0), open: true},
		{when: "now", now: at(12, 0), open: true},
		{when: "boot", now: at(12, 0), open: true},
		{when: "02:00-05:00", now: at(3, 0), open: true},
		{when: "02:00-05:00", now: at(1, 30), opensIn: 30 * time.Minute},
		{when: "02:00-05:00", now: at(5, 0), opensIn: 21 * time.Hour},
		{when: "22:00-04:00", now: at(23, 59), open: true}, // wraps past midnight
		{when: "22:00-04:00", now: at(1, 0), open: true},
		{when: "22:00-04:00", now: at(12, 0), opensIn: 10 * time.Hour},
		{when: "2:00-05:00", err: true},
		{when: "02:00-02:00", err: true},
		{when: "25:00-02:00", err: true},
		{when: "02:00", err: true},
		{when: "tomorrow", err: true},
	} {
		w, err := ParseWhen(tc.when)
		if (err != nil) != tc.err {
			t.Errorf("ParseWhen(%q): %v", tc.when, err)
			continue
		}
		if tc.err {
			continue
		}
		if open, in := w.open(tc.now); open != tc.open || in != tc.opensIn {
			t.Errorf("%q at %s: open %v in %v; want %v in %v", tc.when, tc.now.Format("15:04"), open, in, tc.open, tc.opensIn)
		}
	}
}
