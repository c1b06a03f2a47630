package relay

import "time"

// SetMaxBehind shortens how far behind live a reader may fall, for a test;
// it returns the restore.
func SetMaxBehind(d time.Duration) func() {
	old := maxBehind
	maxBehind = d
	return func() { maxBehind = old }
}
