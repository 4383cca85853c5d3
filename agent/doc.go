// Package agent wires a running trove agent together: it owns the store,
// starts the p2p node with the trust group and discovery settings, keeps
// the trust group on disk, syncs written trees periodically, and serves
// the local control API on a unix socket in the trove home, and, with
// Config.Cache, the Nix binary-cache endpoint (cache.go, package nixcache).
//
// The control API is HTTP+JSON on $TROVE_HOME/agent.sock (mode 0600, so
// only the agent's user can use it): GET /v1/status, GET /v1/peers, and
// POST /v1/run, which runs a trove command line inside the agent with
// output streamed back. The CLI uses /v1/run for every command that needs
// the store or the network while the agent owns them, so each command has
// one implementation whether or not an agent is running.
//
// Start takes the store's lock before anything else, recorded as
// agent-starting until the socket listens (store.Role): Running and
// Connect let a command that races the start find the agent and wait for
// it, and Start waits for a one-shot command that holds the store instead
// of failing.
package agent
