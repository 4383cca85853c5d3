// Package localapi is trove's local API: every operation a person asks of
// a trove home (add, sync, publish, activate, gc, …) as a Go function over
// an Env, with one request and one response type each.
//
// A running agent serves the operations on its control socket
// ($TROVE_HOME/agent.sock, mode 0600) through Handler, as POST
// /v1/<operation> with a JSON request and an NDJSON answer: progress
// events, then one final frame with the response or an error with a
// machine-readable kind. Client calls them. When no agent runs, the CLI
// opens a short-lived Env and calls the same functions in-process (Call
// chooses). The agent never calls the CLI; the CLI only parses flags,
// calls operations and prints their responses.
//
// It is modelled on tailscale's LocalAPI (ipn/localapi with
// client/local): the agent (the backend) does not import this package;
// the agent's Config.API mounts Handler around it.
package localapi
