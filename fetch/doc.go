// Package fetch makes the local store hold whole closures fetched from
// peers: it plans (the closure minus what is valid here, every PathInfo
// believed only through a trusted signature, a recomputed content address
// or a trusted manifest), locates providers, fetches chunks from all of
// them at once with per-peer pipelining, verifies every chunk on arrival,
// reuses chunks already in the store, resumes interrupted transfers from
// spools, and registers paths references-first. It also resolves signed
// manifests from peers (ResolveManifest, Learn).
//
// fetch decides; it calls store and p2p and never speaks wire formats.
// Profiles and activation, which touch no peer, are package profile.
package fetch
