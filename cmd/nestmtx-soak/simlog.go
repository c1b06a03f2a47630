package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// simSession is one Google stream session as the simulator logged it.
type simSession struct {
	device           string
	stopped, expired bool
	ended            time.Time
}

// simTracker is a slog.Handler in front of the simulator's log file that
// follows its stream sessions from the debug records: generated, extended,
// stopped, ended (expired or not).
type simTracker struct {
	next slog.Handler
	st   *simState
}

type simState struct {
	mu       sync.Mutex
	sessions map[string]*simSession
	order    []string
}

func newSimTracker(next slog.Handler) *simTracker {
	return &simTracker{next: next, st: &simState{sessions: map[string]*simSession{}}}
}

func (t *simTracker) Enabled(ctx context.Context, l slog.Level) bool { return true }

func (t *simTracker) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "nestsim: stream ") {
		var device, session string
		expired := false
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "device":
				device = a.Value.String()
			case "session":
				session = a.Value.String()
			case "expired":
				expired = a.Value.Bool()
			}
			return true
		})
		t.st.note(strings.TrimPrefix(r.Message, "nestsim: stream "), device, session, expired, r.Time)
	}
	// The file gets the session lifecycle and everything from info up,
	// not the per-packet debug noise.
	if r.Level >= slog.LevelInfo || strings.HasPrefix(r.Message, "nestsim: stream ") {
		return t.next.Handle(ctx, r)
	}
	return nil
}

func (t *simTracker) WithAttrs(as []slog.Attr) slog.Handler {
	return &simTracker{next: t.next.WithAttrs(as), st: t.st}
}

func (t *simTracker) WithGroup(name string) slog.Handler {
	return &simTracker{next: t.next.WithGroup(name), st: t.st}
}

func (s *simState) note(what, device, session string, expired bool, at time.Time) {
	if session == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[session]
	if ss == nil {
		ss = &simSession{device: device}
		s.sessions[session] = ss
		s.order = append(s.order, session)
	}
	switch what {
	case "stopped":
		ss.stopped = true
	case "ended":
		ss.ended = at
		ss.expired = expired
	}
}

func (s *simState) snapshot() []simSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]simSession, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, *s.sessions[id])
	}
	return out
}

// camPath maps a simulated device id to the path the soak serves it at.
func camPath(device string) string {
	for i := 1; i <= numCameras; i++ {
		if device == soakDeviceID(i) {
			return "cam" + string(rune('0'+i))
		}
	}
	return device
}
