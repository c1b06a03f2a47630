// Package events carries the daemon's observable facts (one-off events and
// per-entity live state) from the parts that produce them to the transports
// that publish them. Producers never block on a slow consumer: a camera
// supervisor must not stall because the MQTT broker is away.
package events

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Event names from the MQTT contract; they are part of the public API.
const (
	CameraDemand          = "demand"
	CameraUnDemand        = "unDemand"
	CameraReady           = "ready"
	CameraNotReady        = "notReady"
	CameraRead            = "read"
	CameraUnread          = "unread"
	CameraExtended        = "extended"
	CameraFailedExtension = "failed-extension"

	CredentialsAuthenticated   = "authenticated"
	CredentialsReauthenticated = "reauthenticated"
	CredentialsUnauthenticated = "unauthenticated"
)

// Domains.
const (
	DomainCamera      = "camera"
	DomainCredentials = "credentials"
)

// Event is one transition, published once and never retained.
type Event struct {
	Domain string `json:"domain"`
	// Entity is the numeric id of the thing the event is about; nil marshals
	// as null for events that concern no single entity.
	Entity  *uint64        `json:"entity"`
	Event   string         `json:"event"`
	Details map[string]any `json:"details"`
	At      time.Time      `json:"at"`
}

// MarshalJSON pins the timestamp to UTC RFC 3339 with milliseconds, whatever
// zone the producer's clock used, so consumers can compare strings.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	return json.Marshal(struct {
		plain
		Details map[string]any `json:"details"`
		At      string         `json:"at"`
	}{plain(e), details, e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
}

// ID returns a pointer suitable for Event.Entity.
func ID(id uint64) *uint64 { return &id }

// State is the latest live state of one entity. A nil Value means the entity
// is gone and consumers should forget it (MQTT: an empty retained message).
type State struct {
	Domain string
	Entity uint64
	Value  any
	// Seq orders updates of one bus so that a consumer replaying a snapshot
	// can drop older updates still queued behind it.
	Seq uint64
}

// Message is what a subscriber receives: exactly one of Event or State is set.
type Message struct {
	Event *Event
	State *State
}

// Bus fans messages out to subscribers and remembers the latest state of
// every entity for consumers that (re)connect later.
type Bus struct {
	now func() time.Time

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	states map[stateKey]State
	seq    uint64
}

type stateKey struct {
	domain string
	entity uint64
}

// NewBus returns a bus stamping events with now (time.Now when nil).
func NewBus(now func() time.Time) *Bus {
	if now == nil {
		now = time.Now
	}
	return &Bus{now: now, subs: map[*Subscription]struct{}{}, states: map[stateKey]State{}}
}

// Subscription receives messages on C until Close.
type Subscription struct {
	bus     *Bus
	ch      chan Message
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe registers a consumer with a buffer of the given size. A consumer
// that falls that far behind loses messages (counted in Dropped) rather than
// slowing the producers down.
func (b *Bus) Subscribe(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{bus: b, ch: make(chan Message, buffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// C is the channel of messages; it is closed by Close.
func (s *Subscription) C() <-chan Message { return s.ch }

// Dropped counts messages lost because the subscriber was too slow.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unregisters the subscription and closes its channel.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		close(s.ch)
		s.bus.mu.Unlock()
	})
}

// Emit publishes an event, stamping At when the producer left it zero.
func (b *Bus) Emit(e Event) {
	if e.At.IsZero() {
		e.At = b.now()
	}
	e.At = e.At.UTC()
	b.fanOut(Message{Event: &e})
}

// SetState records and publishes the latest state of an entity; a nil value
// removes it.
func (b *Bus) SetState(domain string, entity uint64, value any) {
	b.mu.Lock()
	b.seq++
	st := State{Domain: domain, Entity: entity, Value: value, Seq: b.seq}
	k := stateKey{domain, entity}
	if value == nil {
		delete(b.states, k)
	} else {
		b.states[k] = st
	}
	b.deliverLocked(Message{State: &st})
	b.mu.Unlock()
}

// States returns the current state of every entity, in no particular order.
func (b *Bus) States() []State {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]State, 0, len(b.states))
	for _, st := range b.states {
		out = append(out, st)
	}
	return out
}

func (b *Bus) fanOut(m Message) {
	b.mu.Lock()
	b.deliverLocked(m)
	b.mu.Unlock()
}

// deliverLocked holds the bus lock while sending so that a subscriber sees
// messages in the order they were emitted; the sends never block.
func (b *Bus) deliverLocked(m Message) {
	for s := range b.subs {
		select {
		case s.ch <- m:
		default:
			s.dropped.Add(1)
		}
	}
}
