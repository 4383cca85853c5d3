package p2p

import (
	"strings"
	"testing"

	"github.com/trove-p2p/trove/strictcbor"
)

func TestFleetStatusRoundTrip(t *testing.T) {
	for _, st := range []FleetStatus{
		{Name: "web", Current: 1, Newest: 1, Phase: "active", LastGen: 1, LastResult: "ok", LastAt: 1700000000000, Sent: 1700000000001},
		{Name: "web", Newest: 1, Phase: "rolled back", HeldBack: true, LastGen: 1, LastResult: "rolled back", LastAt: 1700000000000,
			LastError: "health check exit 1: exit status 1", Failed: []uint64{1}, Sent: 1700000000001},
		// Every field at its largest: what a sender may send, a member
		// must decode (TellFleet does not check its own encoding).
		{Name: strings.Repeat("n", 64), Current: 1 << 63, Newest: 1 << 63, Phase: strings.Repeat("p", 32), HeldBack: true,
			LastGen: 1 << 63, LastResult: strings.Repeat("r", 32), LastAt: 1 << 62, LastError: strings.Repeat("e", maxFleetText),
			Failed: func() []uint64 {
				f := make([]uint64, MaxFleetFailed)
				for i := range f {
					f[i] = 1 << 63
				}
				return f
			}(), Sent: 1 << 62, Pending: strings.Repeat("w", 64)},
	} {
		b, err := strictcbor.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeFleet(b)
		if err != nil {
			t.Fatalf("%+v: %v", st, err)
		}
		if got.Name != st.Name || got.Phase != st.Phase || len(got.Failed) != len(st.Failed) {
			t.Errorf("round trip: %+v, want %+v", got, st)
		}
	}
}

// TestFleetStatusRefused: oversized or malformed statuses are refused.
func TestFleetStatusRefused(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name string
		st   FleetStatus
	}{
		{"no name", FleetStatus{Phase: "active"}},
		{"long name", FleetStatus{Name: strings.Repeat("n", 65)}},
		{"long error", FleetStatus{Name: "web", LastError: long}},
		{"long phase", FleetStatus{Name: "web", Phase: long[:40]}},
		{"too many failures", FleetStatus{Name: "web", Failed: make([]uint64, MaxFleetFailed+1)}},
	} {
		b, err := strictcbor.Marshal(&tc.st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeFleet(b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := decodeFleet(make([]byte, maxFleetStatus+1)); err == nil {
		t.Error("an oversized status: accepted")
	}
}

func FuzzDecodeFleet(f *testing.F) {
	st := FleetStatus{Name: "web", Current: 2, Phase: "active", Failed: []uint64{1}, Sent: 1}
	b, _ := strictcbor.Marshal(&st)
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeFleet(b)
		if err != nil {
			return
		}
		if s.check() != nil {
			t.Fatalf("decoded a status that does not check: %+v", s)
		}
	})
}
