package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestBackoffSchedule: a few seconds at most for the first two minutes of an
// outage (the API is back within seconds of the broker), growing to 30 s
// only after ten; always with jitter, never zero.
func TestBackoffSchedule(t *testing.T) {
	cases := []struct {
		outage   time.Duration
		min, max time.Duration
	}{
		{0, 1 * time.Second, 2 * time.Second},
		{45 * time.Second, 1 * time.Second, 2 * time.Second},
		{119 * time.Second, 1 * time.Second, 2 * time.Second},
		{3 * time.Minute, 2500 * time.Millisecond, 5 * time.Second},
		{6 * time.Minute, 7500 * time.Millisecond, 15 * time.Second},
		{time.Hour, 15 * time.Second, 30 * time.Second},
	}
	for _, c := range cases {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := reconnectBackoff(20, c.outage)
			if d < c.min || d > c.max {
				t.Fatalf("outage %s: delay %s outside [%s, %s]", c.outage, d, c.min, c.max)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("outage %s: no jitter (%d distinct delays)", c.outage, len(seen))
		}
	}
	// The first attempts after a loss are quick.
	if d := reconnectBackoff(0, 0); d > 250*time.Millisecond || d <= 0 {
		t.Errorf("first attempt after %s", d)
	}
	// Reconnection after a 45 s outage: no wait over 2 s between attempts,
	// so the broker's return is found within 2 s.
	var total time.Duration
	for a := 0; total < 45*time.Second; a++ {
		d := reconnectBackoff(a, total)
		if total > 5*time.Second && d > 2*time.Second {
			t.Fatalf("attempt %d at %s waits %s", a, total, d)
		}
		total += d
	}
}

// TestOutboxOrderAndOverflow: events keep their order, the oldest go first
// past the limit (counted), a state keeps only its newest update (moved to
// the end), and a put-back item comes out first again.
func TestOutboxOrderAndOverflow(t *testing.T) {
	o := newOutbox(3)
	ev := func(n int) *outItem { return &outItem{body: []byte(fmt.Sprint(n)), topics: []string{"a", "b"}} }
	st := func(topic string, seq uint64) *outItem {
		return &outItem{state: &events.State{Seq: seq}, topic: topic}
	}
	o.pushEvent(ev(1))
	o.pushState(st("s/1", 1))
	o.pushEvent(ev(2))
	o.pushState(st("s/1", 2)) // replaces the first, at the end
	o.pushEvent(ev(3))
	if o.pushEvent(ev(4)) != true { // 1 goes
		t.Fatal("no drop reported at the limit")
	}
	if o.droppedEvents() != 1 {
		t.Fatalf("dropped %d", o.droppedEvents())
	}
	var got []string
	for it := o.pop(); it != nil; it = o.pop() {
		if it.state != nil {
			got = append(got, fmt.Sprintf("%s@%d", it.topic, it.state.Seq))
		} else {
			got = append(got, string(it.body))
		}
	}
	if want := "2 s/1@2 3 4"; strings.Join(got, " ") != want {
		t.Fatalf("order %q, want %q", strings.Join(got, " "), want)
	}

	// Put back: the item comes first; a state superseded meanwhile is not
	// put back.
	o.pushEvent(ev(5))
	o.pushState(st("s/2", 5))
	first := o.pop()
	o.pushEvent(ev(6))
	o.pushFront(first)
	s2 := o.pop() // 5 again
	if string(s2.body) != "5" {
		t.Fatalf("put back: got %s first", s2.body)
	}
	stale := o.pop() // s/2@5
	o.pushState(st("s/2", 7))
	o.pushFront(stale)
	var rest []string
	for it := o.pop(); it != nil; it = o.pop() {
		if it.state != nil {
			rest = append(rest, fmt.Sprintf("%s@%d", it.topic, it.state.Seq))
		} else {
			rest = append(rest, string(it.body))
		}
	}
	if want := "6 s/2@7"; strings.Join(rest, " ") != want {
		t.Fatalf("after put-backs %q, want %q", strings.Join(rest, " "), want)
	}

	// Long outages: dropped items do not pile up.
	o = newOutbox(16)
	for i := range 100000 {
		o.pushEvent(ev(i))
		o.pushState(st("s/1", uint64(i+1)))
	}
	if n := len(o.items); n > 200 {
		t.Fatalf("%d items kept for 16 events and one state", n)
	}
	if o.len() != 17 || o.droppedEvents() != 100000-16 {
		t.Fatalf("len %d dropped %d", o.len(), o.droppedEvents())
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute:                           "5m",
		time.Hour:                                 "1h",
		6*time.Minute + 3*time.Second + 1e8:       "6m3s",
		6500 * time.Millisecond:                   "6.5s",
		45 * time.Second:                          "45s",
		1234567 * time.Microsecond:                "1.2s",
		90 * time.Minute:                          "1h30m",
		3*time.Millisecond + 400*time.Microsecond: "3ms",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestRequestAge: the bounds the daemon puts on a request's age (see
// backlog.go) and the errors it answers.
func TestRequestAge(t *testing.T) {
	s := &Service{opts: Options{RequestMaxAge: 5 * time.Minute, SessionExpiry: time.Hour}}
	now := time.Now()
	settled := func(since time.Time, known bool) *backlogWindow {
		w := newBacklogWindow()
		w.settle(since, known)
		return w
	}
	exp := func(sec uint32) paho.PublishProperties { return paho.PublishProperties{MessageExpiry: &sec} }
	cases := []struct {
		name  string
		in    inbound
		props paho.PublishProperties
		want  string // "" or a part of the message
	}{
		{"fresh", inbound{at: now}, paho.PublishProperties{}, ""},
		{"backlog of a short outage", inbound{at: now, window: settled(now.Add(-45*time.Second), true)}, paho.PublishProperties{}, ""},
		{"backlog of a long outage", inbound{at: now, window: settled(now.Add(-6*time.Minute), true)}, paho.PublishProperties{},
			"request expired: it waited up to 6m in the broker while the daemon was away (limit 5m); send it again"},
		{"unknown wait, session longer than the limit", inbound{at: now, window: settled(time.Time{}, false)}, paho.PublishProperties{},
			"for an unknown time of up to 1h (limit 5m)"},
		{"own expiry ran out in the daemon's queue", inbound{at: now.Add(-3 * time.Second)}, exp(2),
			"its Message Expiry Interval (2s left on arrival) ran out"},
		{"own expiry not out", inbound{at: now.Add(-1 * time.Second)}, exp(5), ""},
		{"stuck in the daemon's queue", inbound{at: now.Add(-6 * time.Minute)}, paho.PublishProperties{},
			"it waited 6m in the daemon's queue (limit 5m)"},
	}
	for _, c := range cases {
		got := s.expired(c.in, c.props)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// A session no longer than the limit: an unknown wait is within it.
	s.opts.SessionExpiry = time.Minute
	if got := s.expired(inbound{at: now, window: settled(time.Time{}, false)}, paho.PublishProperties{}); got != "" {
		t.Errorf("unknown wait within a 1m session: %q", got)
	}
	// A request waits for the window's start to be settled, not forever.
	if _, known := newBacklogWindow().began(10 * time.Millisecond); known {
		t.Error("an unsettled window has a known start")
	}
}

// countingHandler answers every request and counts them.
type countingHandler struct {
	n      atomic.Int64
	served chan string
}

func (h *countingHandler) Handle(ctx context.Context, req api.Request) (any, *api.Error) {
	h.n.Add(1)
	select {
	case h.served <- req.RequestID:
	default:
	}
	return map[string]string{"served": req.RequestID}, nil
}

// TestDurableSessionOnMosquitto: the binding on a real Mosquitto with a
// durable session: requests published while the daemon is away (here: the
// broker restarted, the daemon not yet back) are delivered and answered
// once it is; with SessionExpiry 0 it starts clean as before.
func TestDurableSessionOnMosquitto(t *testing.T) {
	m := testkit.StartMosquittoWith(t, testkit.MosquittoOptions{Persistence: true})
	h := &countingHandler{served: make(chan string, 100)}
	bus := events.NewBus(nil)
	s, err := Start(Options{BrokerURL: m.URL(), BaseTopic: "nestmtx", SessionExpiry: time.Hour}, h, bus)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	testkit.Eventually(t, 10*time.Second, "the daemon ready", s.Ready)
	if !strings.HasPrefix(s.opts.ClientID, "nestmtx-") || !strings.HasSuffix(s.opts.ClientID, "-nestmtx") {
		t.Errorf("client id %q: a durable session needs one stable across restarts", s.opts.ClientID)
	}

	// The broker restarts; a client publishes before the daemon is back.
	m.Stop()
	testkit.Eventually(t, 10*time.Second, "the daemon to notice", func() bool { return !s.Connected() })
	m.Start()
	c := testkit.Dial(t, m.Addr, "", "")
	replies := c.Subscribe("rr/replies")
	if err := c.Publish(&paho.Publish{Topic: "nestmtx/requests", QoS: 1,
		Payload:    []byte(`{"command":"list","module":"version","requestId":"early"}`),
		Properties: &paho.PublishProperties{ResponseTopic: "rr/replies", CorrelationData: []byte("early")}}); err != nil {
		t.Fatal(err)
	}
	p := testkit.Next(t, replies, 10*time.Second)
	var body map[string]string
	if err := json.Unmarshal(p.Payload, &body); err != nil || body["served"] != "early" {
		t.Fatalf("reply %s", p.Payload)
	}
	if n := h.n.Load(); n != 1 {
		t.Fatalf("served %d times", n)
	}
}

// TestEventBufferLogsOnce: a full buffer logs one line, not one per event.
func TestEventBufferLogsOnce(t *testing.T) {
	var buf testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	s := &Service{opts: Options{EventBuffer: 16}, out: newOutbox(16), log: log, topics: newTopics("nestmtx")}
	for i := range 100 {
		s.queueEvent(events.Event{Domain: "camera", Event: "read", Details: map[string]any{"i": i}})
	}
	if n := strings.Count(buf.String(), "MQTT events dropped"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, buf.String())
	}
	if s.EventsDropped() != 84 {
		t.Fatalf("dropped %d", s.EventsDropped())
	}
}
