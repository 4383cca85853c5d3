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

// Applied counts the rounds name's follower has finished deciding what to
// fetch and activate (0 if name is not followed).
func (a *Agent) Applied(name string) uint64 {
	a.followMu.Lock()
	fl := a.followers[name]
	a.followMu.Unlock()
	if fl == nil {
		return 0
	}
	return fl.applied.Load()
}

// SetFleetTimes shortens the fleet view's heartbeat and staleness; the
// result restores them.
func SetFleetTimes(heartbeat, stale time.Duration) (restore func()) {
	h, s := fleetHeartbeat, fleetStale
	fleetHeartbeat, fleetStale = heartbeat, stale
	return func() { fleetHeartbeat, fleetStale = h, s }
}
