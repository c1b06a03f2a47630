package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEventJSONShape(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.FixedZone("X", 3600))
	b, err := json.Marshal(Event{Domain: DomainCamera, Entity: ID(3), Event: CameraReady, At: at})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"domain":"camera","entity":3,"event":"ready","details":{},"at":"2026-01-02T02:04:05.006Z"}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Event{Domain: DomainCredentials, Event: "x", At: at})
	if !strings.Contains(string(b), `"entity":null`) {
		t.Fatalf("nil entity must be null: %s", b)
	}
}

func TestBusOrderAndDrop(t *testing.T) {
	bus := NewBus(nil)
	sub := bus.Subscribe(2)
	defer sub.Close()
	bus.Emit(Event{Domain: "a", Event: "1"})
	bus.SetState("camera", 1, map[string]any{"x": 1})
	bus.Emit(Event{Domain: "a", Event: "3"}) // buffer full: dropped
	if got := sub.Dropped(); got != 1 {
		t.Fatalf("dropped = %d, want 1", got)
	}
	m := <-sub.C()
	if m.Event == nil || m.Event.Event != "1" || m.Event.At.IsZero() {
		t.Fatalf("first message %+v", m)
	}
	m = <-sub.C()
	if m.State == nil || m.State.Entity != 1 {
		t.Fatalf("second message %+v", m)
	}
}

func TestBusStatesSnapshot(t *testing.T) {
	bus := NewBus(nil)
	bus.SetState("camera", 1, "a")
	bus.SetState("camera", 2, "b")
	bus.SetState("camera", 1, "c")
	bus.SetState("camera", 2, nil)
	st := bus.States()
	if len(st) != 1 || st[0].Entity != 1 || st[0].Value != "c" || st[0].Seq != 3 {
		t.Fatalf("states = %+v", st)
	}
	sub := bus.Subscribe(1)
	sub.Close()
	sub.Close() // idempotent
	if _, ok := <-sub.C(); ok {
		t.Fatal("channel must be closed")
	}
	bus.Emit(Event{Domain: "x"}) // must not panic on a closed subscriber
}
