package supervisor

import (
	"context"
	"testing"

	"github.com/nestmtx/nestmtx/internal/events"
)

// TestApplyAfterShutdownStartsNothing: a camera sync that finishes while
// the daemon stops (one a consent started just before) must not start a
// supervisor that Shutdown, already waiting for the others, never stops.
func TestApplyAfterShutdownStartsNothing(t *testing.T) {
	m := NewManager(context.Background(), Options{Bus: events.NewBus(nil)},
		func(uint64) (SessionAPI, string) { return nil, "no credential in this test" })
	m.Shutdown(context.Background())
	m.Apply(Spec{ID: 7, Name: "Late", Path: "late", Enabled: true}, 1)
	if _, ok := m.Lookup("late"); ok {
		t.Fatal("a camera applied after Shutdown is served")
	}
	if s := m.Snapshots(); len(s) != 0 {
		t.Fatalf("a camera applied after Shutdown has a supervisor: %+v", s)
	}
}
