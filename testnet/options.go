package testnet

import (
	"fmt"
	"time"
)

// Option configures a network built by Start or NewLAN.
type Option func(*config)

type config struct {
	dht       bool
	quic      bool
	noPairing bool
	strangers map[int]bool
	link      *Link
	nix       bool
}

func newConfig(opts []Option) config {
	c := config{strangers: map[int]bool{}}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithDHT makes every agent join trove's DHT, bootstrapping from agent 0.
func WithDHT() Option { return func(c *config) { c.dht = true } }

// WithQUIC makes in-process agents listen on QUIC only (instead of TCP
// only), so every connection between them is QUIC. LAN agents always listen
// on both.
func WithQUIC() Option { return func(c *config) { c.quic = true } }

// WithoutPairing leaves agents out of the trust group. With no arguments no
// agent allows any other. With agent indexes, those agents are strangers:
// no agent allows them, while they allow every agent of the group, and so
// keep trying to connect to it, as an outsider who knows the group's peer
// IDs would.
func WithoutPairing(strangers ...int) Option {
	return func(c *config) {
		if len(strangers) == 0 {
			c.noPairing = true
		}
		for _, i := range strangers {
			c.strangers[i] = true
		}
	}
}

// WithLink shapes every LAN agent's link to the bridge at start (see
// LAN.Shape). In-process networks ignore it.
func WithLink(l Link) Option { return func(c *config) { c.link = &l } }

// WithNixStores gives every in-process agent a Nix store of its own (a
// store under a directory, Nix's local?root=DIR, served by a private
// nix-daemon) and runs it with the Nix backend. Net.NixRoot says where.
func WithNixStores() Option { return func(c *config) { c.nix = true } }

// allows reports whether agent i has agent j in its trust group.
func (c *config) allows(i, j int) bool {
	return !c.noPairing && i != j && !c.strangers[j]
}

// agentName is how agents name each other in their trust groups.
func agentName(i int) string { return fmt.Sprintf("agent%d", i) }

// connectTimeout bounds the waits for agents to start and to connect.
const connectTimeout = 30 * time.Second

// TB is the part of testing.TB that Start uses: *testing.T and *testing.B
// satisfy it. It is a plain interface so that testnet does not import
// package testing (the trove binary links testnet for `trove bench`).
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}
