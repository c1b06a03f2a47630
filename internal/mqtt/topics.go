package mqtt

import (
	"strconv"

	"github.com/nestmtx/nestmtx/internal/events"
)

// topics forms every topic the daemon publishes or subscribes to under its
// base topic (docs/mqtt-api.md §1, §3, §4); nothing else in the package
// joins topic strings.
type topics struct {
	base, requests, responses, failures, status string
	rules                                       topicRules
}

func newTopics(base string) topics {
	return topics{base: base, requests: base + "/requests", responses: base + "/responses/",
		failures: base + "/failures", status: base + "/status", rules: newTopicRules(base)}
}

// response is where a request without a Response Topic is answered.
func (t topics) response(requestID string) string { return t.responses + requestID }

// event is the pair of topics every event goes to: per entity
// (B/events/<domain>/<id|null>/<event>) and per domain
// (B/stream/<domain>/<event>).
func (t topics) event(e events.Event) [2]string {
	entity := "null"
	if e.Entity != nil {
		entity = strconv.FormatUint(*e.Entity, 10)
	}
	return [2]string{
		t.base + "/events/" + e.Domain + "/" + entity + "/" + e.Event,
		t.base + "/stream/" + e.Domain + "/" + e.Event,
	}
}

// state is an entity's retained state topic, B/state/<domain>/<id>.
func (t topics) state(domain string, entity uint64) string {
	return t.base + "/state/" + domain + "/" + strconv.FormatUint(entity, 10)
}

// logs is where log lines of a level go, B/logs/<level name>.
func (t topics) logs(level string) string { return t.base + "/logs/" + level }

// ownReplies describes the reply topics a client may name inside the base.
func (t topics) ownReplies() string {
	return t.base + "/responses/… and " + t.base + "/replies/<username>/…"
}
