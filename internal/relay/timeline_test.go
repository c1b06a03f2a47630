package relay

import (
	"testing"
	"time"
)

func TestTimeline(t *testing.T) {
	tl := timeline{defaultStep: 3600, clockRate: 90000}
	if got := tl.next(1000); got != 1000 {
		t.Fatalf("first segment keeps its origin: %d", got)
	}
	tl.next(4600)
	tl.newSegment()
	if got := tl.next(999999); got != 8200 {
		t.Fatalf("new segment continues one step later: %d", got)
	}
	if got := tl.next(999999 - 10); got != 11800 {
		t.Fatalf("a step back inside a segment starts a new one: %d", got)
	}
	if got := tl.next(999999 - 10 + 90000*60); got != 15400 {
		t.Fatalf("a huge jump starts a new segment: %d", got)
	}
	// The NTP clock follows the output timeline, not the wall clock: four
	// frame steps, however long the segments took, are 160 ms.
	if d := tl.ntp().Sub(tl.origin); d != 160*time.Millisecond {
		t.Fatalf("ntp advanced %s, want 160ms", d)
	}
}
