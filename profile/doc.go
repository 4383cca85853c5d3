// Package profile keeps a store's profiles: generations as symlinks
// (profiles/<name> → <name>-<N>-link → root store path) switched by one
// atomic rename, the highest generation a profile has had (so a manual
// rollback holds), the per-profile activation lock, activation with its
// command, timeout and record, and publishing a new signed generation of
// a configuration from a local closure.
//
// profile touches no peer: it imports neither p2p nor fetch. Fetching a
// generation's closure is package fetch's job.
package profile
