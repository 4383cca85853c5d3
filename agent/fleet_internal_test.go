package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/p2p"
)

// TestFleetBookBounds: one member's statuses for many names cannot crowd
// out another member's, nor this agent's own.
func TestFleetBookBounds(t *testing.T) {
	var b fleetBook
	now := time.Now()
	for i := range maxFleetNames {
		b.put(peer.ID("mallory"), p2p.FleetStatus{Name: fmt.Sprintf("junk%d", i), Sent: 1}, now)
	}
	if n := b.names("mallory"); n != maxFleetNamesPerPeer {
		t.Errorf("one member holds %d names, at most %d", n, maxFleetNamesPerPeer)
	}
	b.put(peer.ID("self"), p2p.FleetStatus{Name: "web", Sent: 2}, now)
	if len(b.get("web")) != 1 {
		t.Fatal("one member's names kept another's configuration out of the fleet view")
	}
	// A late, older status does not replace a newer one.
	b.put(peer.ID("self"), p2p.FleetStatus{Name: "web", Sent: 1, Phase: "old"}, now)
	if got := b.get("web")["self"].st; got.Sent != 2 {
		t.Errorf("an older status replaced a newer one: %+v", got)
	}
}
