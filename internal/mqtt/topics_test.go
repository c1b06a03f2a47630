package mqtt

import (
	"testing"

	"github.com/nestmtx/nestmtx/internal/events"
)

func TestTopics(t *testing.T) {
	tp := newTopics("home/nestmtx")
	id := uint64(7)
	for _, c := range []struct{ got, want string }{
		{tp.requests, "home/nestmtx/requests"},
		{tp.status, "home/nestmtx/status"},
		{tp.failures, "home/nestmtx/failures"},
		{tp.response("r-1"), "home/nestmtx/responses/r-1"},
		{tp.state(events.DomainCamera, 7), "home/nestmtx/state/camera/7"},
		{tp.event(events.Event{Domain: events.DomainCamera, Entity: &id, Event: "unDemand"})[0], "home/nestmtx/events/camera/7/unDemand"},
		{tp.event(events.Event{Domain: events.DomainCamera, Entity: &id, Event: "unDemand"})[1], "home/nestmtx/stream/camera/unDemand"},
		// An event about no single entity has null in its place.
		{tp.event(events.Event{Domain: "credentials", Event: "authenticated"})[0], "home/nestmtx/events/credentials/null/authenticated"},
	} {
		if c.got != c.want {
			t.Errorf("topic %q, want %q", c.got, c.want)
		}
	}
	// Every topic the daemon publishes is one its own rules let it write.
	for _, topic := range []string{tp.status, tp.failures, tp.response("x"), tp.state("camera", 1),
		tp.event(events.Event{Domain: "camera", Entity: &id, Event: "ready"})[0]} {
		if _, inside := tp.rules.under(topic); !inside {
			t.Errorf("%s is not under the base topic's rules", topic)
		}
	}
}
