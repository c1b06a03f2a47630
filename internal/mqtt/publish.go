package mqtt

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/events"
)

// publishLoop is the only goroutine that publishes events, presence and
// state, so that they reach the broker in the order they happened.
func (s *Service) publishLoop(sub *events.Subscription) {
	defer s.wg.Done()
	defer sub.Close()
	// lastSeq remembers the newest state sent per entity, so an update queued
	// before a resync snapshot cannot overwrite the newer snapshot value.
	lastSeq := map[string]uint64{}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.resync:
			s.onConnected(lastSeq)
		case m, ok := <-sub.C():
			if !ok {
				return
			}
			if m.Event != nil {
				s.publishEvent(*m.Event)
			}
			if m.State != nil {
				s.publishState(*m.State, lastSeq)
			}
		}
	}
}

// onConnected (re)subscribes to requests and republishes presence and every
// retained state: after a broker restart without persistence they are gone.
func (s *Service) onConnected(lastSeq map[string]uint64) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if _, err := s.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: s.topics.requests, QoS: 1},
	}}); err != nil {
		s.log.Error("subscribing to requests", "topic", s.topics.requests, "error", err)
		return
	}
	if err := s.publish(ctx, &paho.Publish{Topic: s.topics.status, Payload: []byte("online"), QoS: 1, Retain: true}); err != nil {
		s.log.Warn("publishing online status", "error", err)
	}
	clear(lastSeq)
	for _, st := range s.bus.States() {
		s.publishState(st, lastSeq)
	}
	s.markReady()
}

func (s *Service) publishEvent(e events.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		s.log.Error("encoding an event", "event", e.Event, "error", err)
		return
	}
	entity := "null"
	if e.Entity != nil {
		entity = strconv.FormatUint(*e.Entity, 10)
	}
	for _, topic := range []string{
		s.topics.base + "/events/" + e.Domain + "/" + entity + "/" + e.Event,
		s.topics.base + "/stream/" + e.Domain + "/" + e.Event,
	} {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		err := s.publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: body,
			Properties: &paho.PublishProperties{ContentType: "application/json"}})
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.log.Debug("event not published", "topic", topic, "error", err)
		}
	}
}

func (s *Service) publishState(st events.State, lastSeq map[string]uint64) {
	topic := s.topics.base + "/state/" + st.Domain + "/" + strconv.FormatUint(st.Entity, 10)
	if st.Seq <= lastSeq[topic] {
		return
	}
	var body []byte
	if st.Value != nil {
		var err error
		if body, err = json.Marshal(st.Value); err != nil {
			s.log.Error("encoding a state", "topic", topic, "error", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	// An empty retained payload is MQTT's way to delete the retained state.
	if err := s.publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: body}); err != nil {
		if s.ctx.Err() == nil {
			s.log.Debug("state not published", "topic", topic, "error", err)
		}
		return
	}
	lastSeq[topic] = st.Seq
}
