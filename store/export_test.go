package store

import "time"

// SetRootTTL shortens how long temporary roots (and the connections that
// hold them) live, for a test; it returns the undo.
func SetRootTTL(d time.Duration) func() {
	old := rootTTL
	rootTTL = d
	return func() { rootTTL = old }
}
