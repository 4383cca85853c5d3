// Package agent wires a running trove agent together: it owns the store,
// starts the p2p node with the trust group and discovery settings, keeps
// the trust group on disk, syncs written trees periodically, and serves
// the local control API on a unix socket in the trove home, and, with
// Config.Cache, the Nix binary-cache endpoint (cache.go, package nixcache).
//
// The control API is HTTP+JSON on $TROVE_HOME/agent.sock (mode 0600, so
// only the agent's user can use it): GET /v1/status and GET /v1/peers,
// and, with Config.API (localapi.API), the typed operations of package
// localapi as POST /v1/<operation>. The agent knows neither those
// operations nor the CLI: localapi wraps the agent, as tailscale's
// LocalAPI wraps its backend.
//
// Start takes the store's lock before anything else, recorded as
// agent-starting until the socket listens (store.Role): Running and
// Connect let a command that races the start find the agent and wait for
// it, and Start waits for a one-shot command that holds the store instead
// of failing.
package agent
