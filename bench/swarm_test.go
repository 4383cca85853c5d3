package bench

import (
	"strings"
	"testing"
)

// The fanout's links can be chosen (trove bench fanout --fanout-mbit),
// within bounds; unchosen they are 100 Mbit/s.
func TestFanoutRateChosen(t *testing.T) {
	for _, c := range []struct {
		mbit int
		rate int64
		name string
	}{
		{0, 100_000_000, "100 Mbit/s"},
		{25, 25_000_000, "25 Mbit/s"},
		{minFanoutMbit, minFanoutMbit * 1_000_000, "5 Mbit/s"},
		{1000, 1_000_000_000, "1000 Mbit/s"},
	} {
		e := &Env{FanoutMbit: c.mbit}
		if got := e.fanoutRate(); got != c.rate {
			t.Errorf("--fanout-mbit %d: rate %d, want %d", c.mbit, got, c.rate)
		}
		if got := rateString(float64(e.fanoutRate()) / 8); got != c.name {
			t.Errorf("--fanout-mbit %d: named %q, want %q", c.mbit, got, c.name)
		}
	}
	for _, mbit := range []int{-1, minFanoutMbit - 1, maxFanoutMbit + 1} {
		if _, err := Run(t.Context(), Options{Names: []string{"fanout"}, FanoutMbit: mbit}); err == nil {
			t.Errorf("Run accepted fanout links of %d Mbit/s", mbit)
		}
	}
}

// A CPU-bound fanout suggests links a quarter as fast, and only within
// the flag's bounds; a room with cores to spare gets no suggestion.
func TestFanoutCPUNote(t *testing.T) {
	for _, c := range []struct {
		busy float64
		rate int64
		hint string // "" for none
	}{
		{0.97, 100_000_000, "--fanout-mbit 25 "},
		{0.91, 50_000_000, "--fanout-mbit 12 "},
		{0.97, 5_000_000, ""},
		{0.97, 19_000_000, ""},
		{0.7, 100_000_000, ""},
	} {
		note := fanoutCPUNote(c.busy, c.rate)
		if !strings.HasPrefix(note, cpuNote(c.busy)) {
			t.Errorf("busy %.2f at %d bit/s: %q does not start with the cores' note", c.busy, c.rate, note)
		}
		if got := strings.Contains(note, "--fanout-mbit"); c.hint == "" && got {
			t.Errorf("busy %.2f at %d bit/s: %q suggests slower links", c.busy, c.rate, note)
		} else if c.hint != "" && !strings.Contains(note, c.hint) {
			t.Errorf("busy %.2f at %d bit/s: %q, want %q", c.busy, c.rate, note, c.hint)
		}
	}
}

// Link rates read as people write them, to three significant digits.
func TestRateString(t *testing.T) {
	for _, c := range []struct {
		bytesPerSec float64
		want        string
	}{
		{12.5e6, "100 Mbit/s"},
		{125e6, "1000 Mbit/s"},
		{1.25e9, "10000 Mbit/s"},
		{12.5e6 / 127, "0.787 Mbit/s"},
	} {
		if got := rateString(c.bytesPerSec); got != c.want {
			t.Errorf("rateString(%g) = %q, want %q", c.bytesPerSec, got, c.want)
		}
	}
}
