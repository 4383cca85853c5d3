// Package testnet starts networks of real trove agents for tests and
// benchmarks. That is its one job; product code must never import it
// (only `trove bench`, through package bench, does).
//
// Two modes:
//
//   - In-process ([Start]): n agents (agent.Start) with real libp2p hosts on
//     loopback, each with its own home, paired in one trust group and kept
//     connected as static peers. Fast; used by most tests.
//   - Network namespaces ([NewLAN], root and iproute2 only): n `trove agent`
//     processes, each in its own namespace with a veth into a shared bridge,
//     finding each other by mDNS alone, with optional tc shaping per link and
//     partitions, kill -9 and restart. Used for multi-host LAN behaviour and
//     by `trove bench`'s swarm and fanout scenarios.
//
// testnet does not import package testing, so the trove binary that links
// it (for `trove bench`) does not either. A LAN is a plain value: [NewLAN]
// and its scenario steps return errors, and the caller runs [LAN.Close].
// Tests use package nettest instead, whose StartLAN takes a testing.TB,
// skips where namespaces cannot run, closes the LAN through t.Cleanup and
// fails the test when a step fails. [Start] takes a [TB], a plain
// interface that *testing.T and *testing.B satisfy: a failure to build the
// in-process network fails the test, and so does a scenario step that
// cannot be carried out; everything it creates is removed through
// t.Cleanup.
//
// A LAN also cleans up on SIGINT/SIGTERM, and removes namespaces that a
// killed process left behind the next time one starts. Call nettest.Main
// from TestMain to remove the trove binary built for namespace mode when
// the tests end.
//
// Methods are named for scenario steps (Stop, Restart, Kill, Partition,
// Heal, Shape, WaitConnected) so that the scenario vocabulary (publish,
// follow, sync, corrupt-peer, ...) can be added the same way.
package testnet
