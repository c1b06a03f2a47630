package memlimit

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

func TestLimitFollowsTheLiveHeap(t *testing.T) {
	p := Default
	for _, c := range []struct {
		live, overhead uint64
		want           int64
	}{
		{0, 0, 40 << 20},
		{20 << 20, 0, 40 << 20},                        // 20 + 16 under the floor
		{100 << 20, 0, 150 << 20},                      // half again
		{1 << 30, 0, 1<<30 + 1<<29},                    // half again
		{30 << 20, 0, 30<<20 + 16<<20},                 // the least headroom
		{20 << 20, 10 << 20, 46 << 20},                 // stacks and metadata on top
		{100 << 20, 30 << 20, 130<<20 + 50<<20},        // the headroom is the live heap's half
		{1 << 62, 0, 1<<63 - 1},                        // no overflow
		{0, 1 << 62, 1<<63 - 1},                        // no overflow
		{2 << 20, 4 << 20, 40 << 20},                   // the floor
		{60 << 20, 12 << 20, 60<<20 + 12<<20 + 30<<20}, // half of 60
	} {
		if got := p.Limit(c.live, c.overhead); got != c.want {
			t.Errorf("Limit(%d MiB, %d MiB) = %d MiB, want %d MiB", c.live>>20, c.overhead>>20, got>>20, c.want>>20)
		}
	}
}

// TestOverheadIsWhatTheLimitCounts: the overhead read from runtime/metrics
// is the memory the soft limit counts besides heap objects and free heap
// pages; goroutine stacks show in it.
func TestOverheadIsWhatTheLimitCounts(t *testing.T) {
	s := []metrics.Sample{{Name: metricLive}, {Name: metricTotal}, {Name: metricReleased},
		{Name: metricObjects}, {Name: metricFree}}
	metrics.Read(s)
	_, before, ok := read(s)
	if !ok {
		t.Fatal("the runtime lacks a metric the policy reads")
	}
	stop := make(chan struct{})
	var started sync.WaitGroup
	for range 1000 {
		started.Add(1)
		go func() { deepStack(64, &started, stop) }()
	}
	started.Wait()
	metrics.Read(s)
	_, after, _ := read(s)
	close(stop)
	// 1000 goroutines with at least 16 KiB of stack each.
	if after < before+15<<20 {
		t.Fatalf("the overhead grew from %d to %d KiB with 16 MiB of goroutine stacks", before>>10, after>>10)
	}
}

// deepStack grows its goroutine's stack (frames of 256 bytes) before it
// waits.
func deepStack(depth int, started *sync.WaitGroup, stop chan struct{}) byte {
	var pad [256]byte
	if depth == 0 {
		started.Done()
		<-stop
		return pad[0]
	}
	pad[depth%len(pad)] = byte(depth)
	return deepStack(depth-1, started, stop) + pad[depth%len(pad)]
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
	for deadline := time.Now().Add(5 * time.Second); debug.SetMemoryLimit(-1) < p.Limit(100<<20, 0); {
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
