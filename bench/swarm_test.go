package bench

import "testing"

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
		if got := mbits(e.fanoutRate()); got != c.name {
			t.Errorf("--fanout-mbit %d: named %q, want %q", c.mbit, got, c.name)
		}
	}
	for _, mbit := range []int{-1, minFanoutMbit - 1, maxFanoutMbit + 1} {
		if _, err := Run(t.Context(), Options{Names: []string{"fanout"}, FanoutMbit: mbit}); err == nil {
			t.Errorf("Run accepted fanout links of %d Mbit/s", mbit)
		}
	}
}
