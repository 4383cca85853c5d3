// Package fetch makes the local store hold whole closures fetched from
// peers: it plans (the closure minus what is valid here, every PathInfo
// believed only through a trusted signature, a recomputed content address
// or a trusted manifest), locates providers, fetches chunks from all of
// them at once with per-peer pipelining, verifies every chunk on arrival,
// reuses chunks already in the store, resumes interrupted transfers from
// spools, and registers paths references-first. It also resolves signed
// manifests from peers (ResolveManifest, Learn).
//
// A Fetcher plans (fetcher.go) and hands the plan to a transfer. The
// transfer's decisions are a pure state machine, the scheduler
// (scheduler.go, unpack.go, with the peer book in peers.go): no I/O, no
// goroutines, no clock. Around it sit the I/O stages: workers that pull
// chunk batches from peers into spools (transfer.go) and the ingest stage
// that unpacks, commits and re-describes (ingest.go). AskAll is the one
// bounded way to ask many peers at once.
//
// fetch decides; it calls store and p2p and never speaks wire formats.
// Profiles and activation, which touch no peer, are package profile.
package fetch
