// Package testnet starts networks of real trove agents for tests,
// benchmarks and the demo. That is its one job; product code must never
// import it.
//
// Two modes:
//
//   - In-process ([Start]): n agents (agent.Start) with real libp2p hosts on
//     loopback, each with its own home, paired in one trust group and kept
//     connected as static peers. Fast; used by most tests.
//   - Network namespaces ([StartLAN], root and iproute2 only): n `trove agent`
//     processes, each in its own namespace with a veth into a shared bridge,
//     finding each other by mDNS alone, with optional tc shaping per link and
//     partitions, kill -9 and restart. Used for multi-host LAN behaviour.
//
// Everything a network creates (agents, processes, namespaces, links, temp
// dirs) is removed through t.Cleanup, also when the test fails; a LAN also
// cleans up on SIGINT/SIGTERM, and removes namespaces that a killed test
// process left behind the next time one starts. Call [Main] from TestMain to
// remove the trove binary built for namespace mode when the tests end.
//
// Start and StartLAN take a [TB], which *testing.T and *testing.B satisfy:
// a failure to build the network fails the test, and so does a scenario
// step that cannot be carried out.
//
// Methods are named for scenario steps (Stop, Restart, Kill, Partition,
// Heal, Shape, WaitConnected) so that the scenario vocabulary (publish,
// follow, sync, corrupt-peer, ...) can be added the same way.
package testnet
