// Package bench holds trove's benchmark scenarios and the runner that
// prints one comparison table: for each scenario trove's figure, a
// baseline measured in the same run (real Nix where it is installed), the
// ratio, the target, and the hardware limits measured in the same run.
// It builds its fixtures with real Nix, offline; the LAN scenarios (swarm,
// fanout) run agents in network namespaces through testnet.
//
// bench is run by `trove bench` and by its own test (`go test ./bench`,
// skipped with -short); product code never imports it.
package bench
