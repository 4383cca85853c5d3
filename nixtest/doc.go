// Package nixtest has one job: helpers for tests that run the real Nix
// (nix-store, nix-hash, nix-build from Debian's nix-bin).
//
// Interop tests call Require first. Without Nix they skip with a visible
// message, so `go test ./...` passes on a machine without it; CI installs Nix
// and sets TROVE_REQUIRE_NIX=1, and then a missing Nix fails the test instead.
//
// Commands started through this package get their own XDG cache, config and
// data directories under the test's temporary directory, so a test neither
// reads nor pollutes the user's ~/.cache/nix (Nix 2.8 caches binary-cache
// answers there without expiry).
//
// StartDaemon runs a nix-daemon listening on a socket of its own, on a
// chroot store under a temporary directory, as the daemon of a multi-user
// install (only root trusted); RunAsNobody runs a test of the same binary
// as the user nobody, a client that daemon does not trust.
package nixtest
