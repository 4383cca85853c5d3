//go:build !race

package main

// raceDetector says the tests run under -race, where every process started
// is several times slower.
const raceDetector = false
