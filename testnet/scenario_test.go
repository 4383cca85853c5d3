package testnet_test

import (
	"testing"

	"github.com/trove-p2p/trove/testnet"
)

// TestScenarioVocabulary: a publisher, two followers, a partition that the
// swarm routes around, and a heal.
func TestScenarioVocabulary(t *testing.T) {
	net := testnet.Start(t, 3)
	net.WaitConnected(2)
	net.Follow(1, "laptop", true)
	net.Follow(2, "laptop", true)
	net.Publish(0, "laptop", map[string]string{"etc/motd": "hello", "bin/activate": "#!/bin/sh\n"})
	net.WaitGeneration(1, "laptop", 1)
	net.WaitGeneration(2, "laptop", 1)
	net.AssertSameTree("laptop", 1, 2)

	// Agent 2 cannot reach the publisher: the announcement reaches it through
	// agent 1 (gossipsub), and so do the manifest and the chunks.
	net.Partition(0, 2)
	net.Publish(0, "laptop", map[string]string{"etc/motd": "hello again", "bin/activate": "#!/bin/sh\n"})
	net.WaitGeneration(1, "laptop", 2)
	net.WaitGeneration(2, "laptop", 2)
	net.AssertSameTree("laptop", 1, 2)
	net.Heal(0, 2)
}
