// Package bench holds trove's benchmark scenarios and the runner that
// prints one comparison table: for each scenario trove's figure, a
// baseline measured in the same run (real Nix where it is installed), the
// ratio, the target, and the hardware limits measured in the same run.
// It builds its fixtures with real Nix, offline.
//
// bench is run by `trove bench` and `go test -bench`; product code never
// imports it.
package bench
