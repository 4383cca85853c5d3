package profile

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestSelectors(t *testing.T) {
	now := time.Date(2025, 6, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	gens := []Generation{
		{Number: 1, Created: now.Add(-40 * day)},
		{Number: 2, Created: now.Add(-20 * day)},
		{Number: 3, Created: now.Add(-10 * day), Current: true},
		{Number: 4, Created: now.Add(-1 * day)},
	}
	for _, tc := range []struct {
		arg  string
		want []uint64
	}{
		{"2", []uint64{2}},
		{"3", []uint64{3}}, // Delete refuses the current one
		{"30d", []uint64{1}},
		{"15d", []uint64{1, 2}},
		{"5d", []uint64{1, 2}}, // never the current one
		{"0d", []uint64{1, 2, 4}},
		{"+1", []uint64{1, 2}},
		{"+2", []uint64{1, 2}},
		{"+3", []uint64{1}},
		{"+9", nil},
	} {
		s, err := ParseSelector(tc.arg)
		if err != nil {
			t.Fatalf("%s: %v", tc.arg, err)
		}
		if got := s.Select(gens, now); !slices.Equal(got, tc.want) {
			t.Errorf("%s selects %v, want %v", tc.arg, got, tc.want)
		}
	}
}

func TestBadSelectors(t *testing.T) {
	for arg, msg := range map[string]string{
		"xd":  `"xd": want a number of days like 30d`,
		"-1d": `"-1d": want a number of days like 30d`,
		"+0":  `"+0": want +N with N ≥ 1`,
		"+x":  `"+x": want +N with N ≥ 1`,
		"0":   `"0": want a generation number, Nd or +N`,
		"abc": `"abc": want a generation number, Nd or +N`,
	} {
		_, err := ParseSelector(arg)
		var se *SelectorError
		if !errors.As(err, &se) || err.Error() != msg {
			t.Errorf("%s: %v, want %s", arg, err, msg)
		}
	}
}

func TestRollbackTarget(t *testing.T) {
	gens := []Generation{{Number: 1}, {Number: 3}, {Number: 4}, {Number: 6}}
	for _, tc := range []struct {
		cur, to, want uint64
		fails         bool
	}{
		{cur: 6, want: 4},
		{cur: 4, want: 3},
		{cur: 3, want: 1},
		{cur: 1, fails: true},
		{cur: 6, to: 1, want: 1},
		{cur: 1, to: 4, want: 4},
	} {
		got, err := RollbackTarget("laptop", gens, tc.cur, tc.to)
		if tc.fails {
			if err == nil || err.Error() != "laptop has no generation before 1 to roll back to (see trove generations laptop)" {
				t.Errorf("from %d: %d, %v; want the error", tc.cur, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("from %d to %d: %d, %v; want %d", tc.cur, tc.to, got, err, tc.want)
		}
	}
}
