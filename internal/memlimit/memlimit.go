// Package memlimit keeps the Go runtime's soft memory limit close to what
// the daemon needs, never below it. A fixed limit under the working set
// makes the collector run without pause (at 200 readers a fixed 40 MiB
// limit spent 80 % of the daemon's CPU in the GC); no limit at all lets
// the heap double after every burst, which a NAS feels. So the limit
// follows what the process holds: a floor for small loads, and above it
// the live heap plus the runtime's own memory (goroutine stacks, metadata)
// plus headroom for garbage, re-read every few seconds.
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
// heap and the runtime's overhead, with half the live heap again (at least
// 16 MiB) for garbage.
var Default = Policy{Floor: 40 << 20, Headroom: 0.5, MinHeadroom: 16 << 20, Every: 2 * time.Second}

// Limit is the limit for a live heap of live bytes, with overhead bytes
// of memory the runtime holds besides heap objects: goroutine stacks,
// metadata, the unused part of heap spans. The soft limit counts those
// too, so headroom measured from the live heap alone would shrink as
// readers (each with its goroutines' stacks) are added, until the
// collector ran without pause again: at 8 cameras and 200 readers the GC
// took a quarter of the CPU that way.
func (p Policy) Limit(live, overhead uint64) int64 {
	if live > math.MaxInt64/4 || overhead > math.MaxInt64/4 {
		return math.MaxInt64
	}
	extra := max(int64(float64(live)*p.Headroom), p.MinHeadroom)
	return max(p.Floor, int64(live)+int64(overhead)+extra)
}

// The runtime/metrics the policy reads.
const (
	metricLive     = "/gc/heap/live:bytes"
	metricTotal    = "/memory/classes/total:bytes"
	metricReleased = "/memory/classes/heap/released:bytes"
	metricObjects  = "/memory/classes/heap/objects:bytes"
	metricFree     = "/memory/classes/heap/free:bytes"
)

// read returns the live heap and the overhead (see Limit) from samples
// of the metrics above, in that order. Free heap pages are room for new
// objects, not overhead; released ones are no longer memory at all.
func read(s []metrics.Sample) (live, overhead uint64, ok bool) {
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0, 0, false
		}
	}
	live = s[0].Value.Uint64()
	total, released, objects, free := s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64(), s[4].Value.Uint64()
	if held := released + objects + free; total > held {
		overhead = total - held
	}
	return live, overhead, true
}

// Run keeps the runtime's soft memory limit on the policy until ctx ends,
// then lifts it. The limit is set at once, before the first tick.
func (p Policy) Run(ctx context.Context) {
	sample := []metrics.Sample{{Name: metricLive}, {Name: metricTotal}, {Name: metricReleased},
		{Name: metricObjects}, {Name: metricFree}}
	apply := func() {
		metrics.Read(sample)
		if live, overhead, ok := read(sample); ok {
			debug.SetMemoryLimit(p.Limit(live, overhead))
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
