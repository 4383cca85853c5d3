//go:build race

package fetch

// raceEnabled: the race detector's shadow memory multiplies RSS, so the
// tests that measure a process's peak RSS skip under it.
const raceEnabled = true
