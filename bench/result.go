package bench

// Result is one row of the benchmark table.
type Result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Trove    float64 `json:"trove"`
	Baseline float64 `json:"baseline,omitempty"`
	// BaselineName says what the baseline is ("nix copy", "nix-store --add").
	BaselineName string  `json:"baselineName,omitempty"`
	Ratio        float64 `json:"ratio,omitempty"` // trove / baseline
	Target       string  `json:"target"`
	Met          *bool   `json:"met,omitempty"`
	// AtLeast marks a figure measured when the scenario stopped early:
	// the real one is at least this.
	AtLeast bool   `json:"atLeast,omitempty"`
	Note    string `json:"note,omitempty"`
	Skipped string `json:"skipped,omitempty"`
}

func met(ok bool) *bool { return &ok }

// ratioRow fills the ratio and whether ratio ≤ max (or ≥ min when atLeast).
func ratioRow(r Result, limit float64, atLeast bool) Result {
	if r.Baseline > 0 {
		r.Ratio = r.Trove / r.Baseline
		if atLeast {
			r.Met = met(r.Ratio >= limit)
		} else {
			r.Met = met(r.Ratio <= limit)
		}
	}
	return r
}
