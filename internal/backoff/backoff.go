// Package backoff computes retry delays that double from a first delay up
// to a cap, optionally jittered so that many clients do not retry in step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is a retry schedule.
type Backoff struct {
	First, Max time.Duration
	// Jitter draws each delay from the upper half of its step (d/2..d).
	Jitter bool
}

// Delay is the wait before retry n (1 for the first retry): First doubled
// n-1 times, at most Max.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Max
	if shift := max(n-1, 0); shift < 62 {
		if s := b.First << shift; s > 0 && s < b.Max {
			d = s
		}
	}
	if b.Jitter {
		return d/2 + rand.N(d/2+1)
	}
	return d
}
