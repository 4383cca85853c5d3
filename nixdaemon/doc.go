// Package nixdaemon is a client of the Nix daemon's worker protocol: the
// protocol nix-store and nix speak to nix-daemon over its Unix socket
// (Dial) or over the stdin and stdout of `nix-daemon --stdio` (Start).
//
// It announces protocol 1.34 (Nix 2.8 to 2.14) and accepts daemons that
// speak 1.21 or later (Nix 2.0 and later); the version in use is the lower
// of the two. Only the operations trove needs are here: validity queries,
// path info, NAR export (NarFromPath) and import (AddToStoreNar), and GC
// roots. Wire layouts follow Nix 2.8.0's src/libstore/daemon.cc and
// remote-store.cc.
//
// Every read of daemon bytes is bounded. A reply that breaks the protocol,
// an I/O error, or a context canceled while an operation is in flight
// closes the connection; the Client is then unusable and every later call
// returns an error wrapping ErrClosed. An error the daemon reports
// properly (a *DaemonError, or nix.ErrNotValid for an invalid path) leaves
// the connection usable.
package nixdaemon
