package socketio

import (
	"encoding/json"

	"github.com/nestmtx/nestmtx/internal/events"
)

// WildcardAll is the event every bus event is also emitted as.
const WildcardAll = "nestmtx:*"

// EventNames are the three Socket.IO events a bus event is emitted as:
// "<domain>:<event>", "<domain>:*" and "nestmtx:*".
func EventNames(e events.Event) [3]string {
	return [3]string{e.Domain + ":" + e.Event, e.Domain + ":*", WildcardAll}
}

// fanOut emits the bus's events to every connection. It never waits for a
// client: send only queues, and drops for clients too far behind.
func (s *Server) fanOut(sub *events.Subscription) {
	defer s.wg.Done()
	defer close(s.fanOutDone)
	defer sub.Close()
	take := func(m events.Message) {
		if m.Event != nil {
			s.emitEvent(*m.Event)
		}
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.drain:
			// Shutdown: what the bus delivered so far, then stop.
			for {
				select {
				case m, ok := <-sub.C():
					if !ok {
						return
					}
					take(m)
				default:
					return
				}
			}
		case m, ok := <-sub.C():
			if !ok {
				return
			}
			take(m)
		}
	}
}

func (s *Server) emitEvent(e events.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		s.log.Error("Socket.IO: encoding an event", "event", e.Event, "error", err)
		return
	}
	names := EventNames(e)
	var frames [3][]byte
	for i, name := range names {
		frames[i] = frame(name, body)
	}
	for _, c := range s.snapshot() {
		for _, f := range frames {
			if c.send(f, true) == dropped {
				s.droppedEvents.Add(1)
				s.noteDrop()
			}
		}
	}
}

// frame is the Socket.IO EVENT packet (default namespace) carrying one
// argument, already JSON: 2["<event>",<body>].
func frame(event string, body []byte) []byte {
	name, _ := json.Marshal(event)
	f := make([]byte, 0, len(name)+len(body)+4)
	f = append(f, '2', '[')
	f = append(f, name...)
	f = append(f, ',')
	f = append(f, body...)
	return append(f, ']')
}
