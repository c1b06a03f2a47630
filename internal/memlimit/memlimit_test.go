package memlimit

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestLimitFollowsTheLiveHeap(t *testing.T) {
	p := Default
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, 40 << 20},
		{20 << 20, 40 << 20},        // 20 + 16 under the floor
		{100 << 20, 150 << 20},      // half again
		{1 << 30, 1<<30 + 1<<29},    // half again
		{30 << 20, 30<<20 + 16<<20}, // the least headroom
	} {
		if got := p.Limit(c.live); got != c.want {
			t.Errorf("Limit(%d MiB) = %d MiB, want %d MiB", c.live>>20, got>>20, c.want>>20)
		}
	}
}

// gcShare runs work and returns the share of this process's CPU time the
// collector took meanwhile, and the collections that ran. The runtime
// updates its CPU figures at the end of each collection, so one is forced
// before and after (the last one counts in the share: a few percent).
func gcShare(work func()) (share float64, cycles uint64) {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"}}
	runtime.GC()
	metrics.Read(s)
	gc0, all0, n0 := s[0].Value.Float64(), s[1].Value.Float64(), s[2].Value.Uint64()
	work()
	metrics.Read(s)
	n1 := s[2].Value.Uint64()
	runtime.GC()
	metrics.Read(s)
	return (s[0].Value.Float64() - gc0) / (s[1].Value.Float64() - all0), n1 - n0
}

// TestNoCollectorSpiral: with a working set well above the floor (100 MiB
// live) and the relay's kind of allocation rate (a few MB a second), the
// default policy keeps the collector under 10 % of the CPU; a fixed limit
// at the floor, as before, makes it run without pause.
func TestNoCollectorSpiral(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100 MiB and runs for seconds")
	}
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	live := make([][]byte, 100)
	for i := range live {
		live[i] = make([]byte, 1<<20)
		for j := 0; j < len(live[i]); j += 4096 {
			live[i][j] = 1
		}
	}
	churn := func() {
		// 4 MB/s of short-lived garbage for 1.5 s, with the CPU otherwise
		// busy, as a relay's readers keep it.
		var sink []byte
		deadline := time.Now().Add(1500 * time.Millisecond)
		next := time.Now()
		x := 0
		for time.Now().Before(deadline) {
			if time.Now().After(next) {
				sink = make([]byte, 64<<10)
				sink[0] = byte(x)
				next = next.Add(16 * time.Millisecond)
			}
			x++
		}
		_ = sink
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p := Default
	p.Every = 100 * time.Millisecond
	go func() { defer close(done); p.Run(ctx) }()
	runtime.GC()
	// The policy has read the 100 MiB live heap once the limit is the one
	// for it (an earlier read may have seen part of it).
	for deadline := time.Now().Add(5 * time.Second); debug.SetMemoryLimit(-1) < p.Limit(100<<20); {
		if time.Now().After(deadline) {
			t.Fatalf("the limit is still %d MiB with 100 MiB live", debug.SetMemoryLimit(-1)>>20)
		}
		runtime.Gosched()
	}
	adaptive, adaptiveCycles := gcShare(churn)
	cancel()
	<-done

	debug.SetMemoryLimit(Default.Floor)
	fixed, fixedCycles := gcShare(churn)
	debug.SetMemoryLimit(-1)
	runtime.KeepAlive(live)

	t.Logf("with 100 MiB live: the collector took %.1f%% of the CPU (%d collections) under the default policy, %.1f%% (%d) with a fixed %d MiB limit",
		100*adaptive, adaptiveCycles, 100*fixed, fixedCycles, Default.Floor>>20)
	if adaptive >= 0.10 || adaptiveCycles > 2 {
		t.Fatalf("the collector took %.1f%% of the CPU (%d collections) under the default policy", 100*adaptive, adaptiveCycles)
	}
	if fixedCycles < 10 {
		t.Fatalf("the fixed limit's spiral did not show (%d collections): the test no longer measures it", fixedCycles)
	}
}
