package agent

import "time"

// SetLearnInterval shortens the learner's periodic check for a test.
func SetLearnInterval(d time.Duration) (restore func()) {
	old := learnInterval
	learnInterval = d
	return func() { learnInterval = old }
}

// SetAnnounceExpiry shortens how long an announced generation that never
// arrives is awaited, for a test.
func SetAnnounceExpiry(d time.Duration) (restore func()) {
	old := announceExpiry
	announceExpiry = d
	return func() { announceExpiry = old }
}
