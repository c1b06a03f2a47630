// Package memlimit keeps the Go runtime's soft memory limit close to what
// the daemon needs, never below it. A fixed limit under the working set
// makes the collector run without pause (at 200 readers a fixed 40 MiB
// limit spent 80 % of the daemon's CPU in the GC); no limit at all lets
// the heap double after every burst, which a NAS feels. So the limit
// follows the live heap: a floor for small loads, and above it the live
// heap plus headroom, re-read every few seconds.
package memlimit

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Policy is how the limit follows the live heap.
type Policy struct {
	// Floor is the least limit: small loads keep a small footprint.
	Floor int64
	// Headroom is the share of the live heap allowed on top of it before
	// the collector must run (0.5: the limit is 1.5 times the live heap).
	Headroom float64
	// MinHeadroom is the least headroom, in bytes.
	MinHeadroom int64
	// Every is how often the live heap is read.
	Every time.Duration
}

// Default is the daemon's policy: 40 MiB for a few cameras and readers
// (the figure the relay's benchmark is held to), and above that the live
// heap and half of it again, at least 16 MiB more.
var Default = Policy{Floor: 40 << 20, Headroom: 0.5, MinHeadroom: 16 << 20, Every: 2 * time.Second}

// Limit is the limit for a live heap of live bytes.
func (p Policy) Limit(live uint64) int64 {
	if live > math.MaxInt64/4 {
		return math.MaxInt64
	}
	extra := max(int64(float64(live)*p.Headroom), p.MinHeadroom)
	return max(p.Floor, int64(live)+extra)
}

// Run keeps the runtime's soft memory limit on the policy until ctx ends,
// then lifts it. The limit is set at once, before the first tick.
func (p Policy) Run(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	apply := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(p.Limit(sample[0].Value.Uint64()))
		}
	}
	apply()
	t := time.NewTicker(p.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			debug.SetMemoryLimit(math.MaxInt64)
			return
		case <-t.C:
			apply()
		}
	}
}
