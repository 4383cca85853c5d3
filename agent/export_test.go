package agent

import "time"

// SetLearnInterval shortens the learner's periodic check for a test.
func SetLearnInterval(d time.Duration) (restore func()) {
	old := learnInterval
	learnInterval = d
	return func() { learnInterval = old }
}
