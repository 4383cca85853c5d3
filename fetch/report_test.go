package fetch

import "testing"

func TestReportPeersUsed(t *testing.T) {
	r := &Report{Peers: []PeerReport{{ID: "a", BytesFetched: 10}, {ID: "b"}, {ID: "c", BytesFetched: 1}}}
	if got := r.PeersUsed(); got != 2 {
		t.Fatalf("PeersUsed = %d, want 2 (a peer that sent nothing does not count)", got)
	}
}
