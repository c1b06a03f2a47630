package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/events"
)

// Events, presence and state reach the broker through one goroutine,
// sendLoop, so that they arrive in the order they happened. publishLoop only
// moves what the bus emits into the outbox, and so never waits for the
// broker: while the broker is away the outbox keeps the events (at most
// Options.EventBuffer, dropping the oldest) and the newest state of each
// entity, and sendLoop publishes them, in order, once it is back.

// publishLoop moves the bus's messages into the outbox.
func (s *Service) publishLoop(sub *events.Subscription) {
	defer s.wg.Done()
	defer sub.Close()
	take := func(m events.Message) {
		if m.Event != nil {
			s.queueEvent(*m.Event)
		}
		if m.State != nil {
			s.out.pushState(&outItem{state: m.State, topic: s.stateTopic(*m.State)})
		}
		s.wakeSender()
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case m, ok := <-sub.C():
			if !ok {
				return
			}
			take(m)
		case done := <-s.final:
			// Shutdown: what the bus delivered so far, then offline.
			for drained := false; !drained; {
				select {
				case m, ok := <-sub.C():
					if !ok {
						drained = true
						break
					}
					take(m)
				default:
					drained = true
				}
			}
			s.out.pushFinal(&outItem{final: done})
			s.wakeSender()
		}
	}
}

func (s *Service) queueEvent(e events.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		s.log.Error("encoding an event", "event", e.Event, "error", err)
		return
	}
	pair := s.topics.event(e)
	it := &outItem{body: body, topics: pair[:]}
	if s.out.pushEvent(it) {
		s.logEventDrop()
	}
}

// logEventDrop says, at most once a minute, that the outbox overflowed.
func (s *Service) logEventDrop() {
	if now := time.Now(); now.Sub(s.lastOutLog) > time.Minute {
		s.lastOutLog = now
		s.log.Warn("MQTT events dropped: the broker is away and the event buffer is full; the oldest go first",
			"buffer", s.opts.EventBuffer, "dropped_so_far", s.out.droppedEvents())
	}
}

// EventsDropped counts the events dropped because the buffer that keeps them
// while the broker is away was full.
func (s *Service) EventsDropped() uint64 { return s.out.droppedEvents() }

func (s *Service) wakeSender() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// idle waits for a wake-up, d at most (0: no limit); false at shutdown.
func (s *Service) idle(d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-s.ctx.Done():
		return false
	case <-s.wake:
	case <-timeout:
	}
	return true
}

// sendLoop is the only goroutine that publishes events, presence and state.
// After each (re)connection it first catches up (onConnected), then sends
// what the outbox holds.
func (s *Service) sendLoop() {
	defer s.wg.Done()
	// lastSeq remembers the newest state sent per topic, so an update queued
	// before a resync snapshot cannot overwrite the newer snapshot value.
	lastSeq := map[string]uint64{}
	var doneGen uint64
	for s.ctx.Err() == nil {
		c := s.conn.Load()
		if !s.connected.Load() || c == nil {
			s.idle(0)
			continue
		}
		if c.gen != doneGen {
			err := s.onConnected(lastSeq, c)
			if err != nil && s.connected.Load() && s.conn.Load() == c {
				// Still the same connection: the broker is slow; try again.
				s.log.Warn("catching up with the MQTT broker failed; retrying", "error", err)
				s.idle(time.Second)
				continue
			}
			doneGen = c.gen
			continue
		}
		it := s.out.pop()
		if it == nil {
			s.idle(0)
			continue
		}
		if !s.sendItem(it, lastSeq) {
			s.out.pushFront(it)
			s.idle(250 * time.Millisecond)
		}
	}
}

// sendItem publishes one event (each of its topics once) or state update;
// false when the broker went away and the item must wait for it.
func (s *Service) sendItem(it *outItem, lastSeq map[string]uint64) bool {
	if it.final != nil {
		err := s.sendOwn(s.offline())
		if err != nil && !errors.Is(err, errRefused) {
			return false
		}
		close(it.final)
		return true
	}
	if it.state != nil {
		err := s.publishState(*it.state, it.topic, lastSeq)
		return err == nil || errors.Is(err, errRefused)
	}
	for len(it.topics) > 0 {
		err := s.sendOwn(&paho.Publish{Topic: it.topics[0], QoS: 1, Payload: it.body,
			Properties: &paho.PublishProperties{ContentType: "application/json"}})
		if err != nil && !errors.Is(err, errRefused) {
			return false
		}
		if err != nil {
			s.log.Debug("event refused by the broker", "topic", it.topics[0], "error", err)
		}
		it.topics = it.topics[1:]
	}
	return true
}

// sendOwn publishes one of the daemon's own messages from sendLoop. The
// timeout only guards against a broker that keeps the connection but never
// acknowledges; a message waiting across a reconnection is acknowledged
// when its session resumes.
func (s *Service) sendOwn(p *paho.Publish) error {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	return s.send(ctx, p, false)
}

// onConnected catches up with a new connection: it learns how long the
// queued requests may have waited (first connection of a resumed session),
// (re)subscribes to requests when the session does not hold the
// subscription, marks the end of the broker's backlog, and republishes
// presence and every retained state: after a broker restart without
// persistence they are gone.
func (s *Service) onConnected(lastSeq map[string]uint64, c *connInfo) error {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	// The window may have closed already (its marker returned): its
	// requests wait for this all the same.
	if w := s.firstWindow; w != nil && !w.isSettled() {
		since, known := s.readDeparture(ctx)
		w.settle(since, known)
	}
	// A resumed session holds the subscription; the first connection of
	// this run subscribes anyway, as the session may be an older daemon's.
	if !c.sessionPresent || c.gen == 1 {
		// Retain handling 2: a retained request is never replayed by a
		// (re)subscription.
		ack, err := s.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: s.topics.requests, QoS: 1, RetainHandling: 2},
		}})
		if err != nil {
			if ack != nil && len(ack.Reasons) > 0 && ack.Reasons[0] >= 0x80 {
				s.log.Error("subscribing to requests", "topic", s.topics.requests, "error", err)
				return nil
			}
			return err
		}
	}
	if err := s.sendOwn(&paho.Publish{Topic: s.topics.status, Payload: []byte("online"), QoS: 1, Retain: true}); err != nil {
		if !errors.Is(err, errRefused) {
			return err
		}
		s.log.Warn("publishing online status", "error", err)
	}
	clear(lastSeq)
	for _, st := range s.bus.States() {
		if err := s.publishState(st, s.stateTopic(st), lastSeq); err != nil && !errors.Is(err, errRefused) {
			return err
		}
	}
	s.markReady()
	return nil
}

func (s *Service) stateTopic(st events.State) string {
	return s.topics.state(st.Domain, st.Entity)
}

// publishState publishes a retained state unless a newer one went out.
func (s *Service) publishState(st events.State, topic string, lastSeq map[string]uint64) error {
	if st.Seq <= lastSeq[topic] {
		return nil
	}
	var body []byte
	if st.Value != nil {
		var err error
		if body, err = json.Marshal(st.Value); err != nil {
			s.log.Error("encoding a state", "topic", topic, "error", err)
			return nil
		}
	}
	// An empty retained payload is MQTT's way to delete the retained state.
	err := s.sendOwn(&paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: body})
	if err != nil && !errors.Is(err, errRefused) {
		return err
	}
	if err != nil {
		s.log.Debug("state refused by the broker", "topic", topic, "error", err)
	}
	lastSeq[topic] = st.Seq
	return err
}

// outItem is an event (its JSON and the topics it has yet to go to) or a
// state update.
type outItem struct {
	body   []byte
	topics []string

	state *events.State
	topic string // the state's topic

	// final: the offline status of a clean shutdown, closed once sent.
	final chan struct{}

	gone bool // dropped or superseded while queued
}

// outbox is sendLoop's queue: events in order, at most limit of them (the
// oldest go first), and state updates, at most one per topic (a newer one
// replaces the queued one and takes its place at the end).
type outbox struct {
	mu      sync.Mutex
	items   []*outItem
	events  int // live events in items
	dead    int // gone items still in items
	limit   int
	states  map[string]*outItem
	dropped uint64
}

func newOutbox(limit int) *outbox {
	return &outbox{limit: max(limit, 1), states: map[string]*outItem{}}
}

// pushEvent queues an event; true when the oldest had to be dropped for it.
func (o *outbox) pushEvent(it *outItem) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	dropped := false
	if o.events >= o.limit {
		dropped = o.dropOldestEventLocked()
	}
	o.items = append(o.items, it)
	o.events++
	o.compactLocked()
	return dropped
}

// pushFinal queues the shutdown's offline status after everything else.
func (o *outbox) pushFinal(it *outItem) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.items = append(o.items, it)
}

func (o *outbox) pushState(it *outItem) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if old := o.states[it.topic]; old != nil {
		old.gone = true
		o.dead++
	}
	o.states[it.topic] = it
	o.items = append(o.items, it)
	o.compactLocked()
}

// pop takes the first item, nil when there is none.
func (o *outbox) pop() *outItem {
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.items) > 0 {
		it := o.items[0]
		o.items[0] = nil
		o.items = o.items[1:]
		if it.gone {
			o.dead--
			continue
		}
		switch {
		case it.state != nil:
			delete(o.states, it.topic)
		case it.final == nil:
			o.events--
		}
		return it
	}
	return nil
}

// pushFront puts back an item pop returned and that could not be sent.
func (o *outbox) pushFront(it *outItem) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case it.state != nil:
		if o.states[it.topic] != nil {
			return // a newer state of the same topic is queued
		}
		o.states[it.topic] = it
	case it.final == nil:
		o.events++
	}
	o.items = append([]*outItem{it}, o.items...)
	if o.events > o.limit {
		o.dropOldestEventLocked()
	}
}

func (o *outbox) dropOldestEventLocked() bool {
	for _, it := range o.items {
		if !it.gone && it.state == nil && it.final == nil {
			it.gone = true
			o.dead++
			o.events--
			o.dropped++
			return true
		}
	}
	return false
}

// compactLocked removes gone items once they are half of the queue.
func (o *outbox) compactLocked() {
	if o.dead < 64 || o.dead*2 < len(o.items) {
		return
	}
	live := make([]*outItem, 0, len(o.items)-o.dead)
	for _, it := range o.items {
		if !it.gone {
			live = append(live, it)
		}
	}
	o.items, o.dead = live, 0
}

func (o *outbox) droppedEvents() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items) - o.dead
}
