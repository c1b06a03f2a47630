// Package logstream lets transports follow the daemon's log live: a
// slog.Handler that passes every record on to the file log and, when
// someone listens, also hands it to subscribers as a Record in the shape
// NestMTX's log stream has (pino's: numeric levels, msg, service,
// hostname, pid, time). A subscriber that does not keep up loses lines
// (counted); it never slows the daemon's logging.
package logstream

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nestmtx/nestmtx/internal/redact"
)

// The stream's levels (NestMTX's numbering, pino's shifted by ten).
const (
	LevelTrace = 20
	LevelDebug = 30
	LevelInfo  = 40
	LevelWarn  = 50
	LevelError = 60
	LevelFatal = 70
)

// levelNames are the names of the levels, as settings and topics spell
// them.
var levelNames = map[int]string{LevelTrace: "trace", LevelDebug: "debug", LevelInfo: "info",
	LevelWarn: "warn", LevelError: "error", LevelFatal: "fatal"}

// LevelName is the name of a stream level ("info"), "" for none.
func LevelName(level int) string { return levelNames[level] }

// ParseLevel reads a level name ("warn"); ok is false for anything else,
// "off" included.
func ParseLevel(name string) (level int, ok bool) {
	for l, n := range levelNames {
		if strings.EqualFold(n, name) {
			return l, true
		}
	}
	return 0, false
}

// FromSlog maps a slog level to the stream's: below Debug is trace, above
// Error is fatal.
func FromSlog(l slog.Level) int {
	switch {
	case l < slog.LevelDebug:
		return LevelTrace
	case l < slog.LevelInfo:
		return LevelDebug
	case l < slog.LevelWarn:
		return LevelInfo
	case l < slog.LevelError:
		return LevelWarn
	case l == slog.LevelError:
		return LevelError
	}
	return LevelFatal
}

// toSlog is the lowest slog level that maps to a stream level.
func toSlog(level int) slog.Level {
	switch {
	case level <= LevelTrace:
		return slog.LevelDebug - 4
	case level <= LevelDebug:
		return slog.LevelDebug
	case level <= LevelInfo:
		return slog.LevelInfo
	case level <= LevelWarn:
		return slog.LevelWarn
	case level <= LevelError:
		return slog.LevelError
	}
	return slog.LevelError + 1
}

// Record is one log line as the stream carries it. Attrs are the line's
// own attributes (groups joined with dots); they never hold secrets, as
// the daemon logs none, and URLs' auth parameters are redacted again here.
type Record struct {
	Hostname  string         `json:"hostname"`
	Level     int            `json:"level"`
	Msg       string         `json:"msg"`
	PID       int            `json:"pid"`
	Service   string         `json:"service"`
	Time      int64          `json:"time"`      // Unix milliseconds
	Timestamp string         `json:"timestamp"` // RFC 3339 with milliseconds, UTC
	Attrs     map[string]any `json:"attrs,omitempty"`
}

// LevelName is the record's level name.
func (r Record) LevelName() string { return LevelName(r.Level) }

// Hub hands records to subscribers.
type Hub struct {
	hostname string
	pid      int
	service  string

	mu   sync.Mutex
	subs []*Subscription
	// min is the lowest slog level any subscriber wants (math.MaxInt-ish
	// when none): Enabled reads it without the lock.
	min atomic.Int64
}

// NewHub makes a hub whose records name service ("nestmtx") and this host.
func NewHub(service string) *Hub {
	host, _ := os.Hostname()
	h := &Hub{hostname: host, pid: os.Getpid(), service: service}
	h.min.Store(int64(noSubscribers))
	return h
}

const noSubscribers = slog.Level(1 << 30)

// Subscription receives the records at or above its level.
type Subscription struct {
	h       *Hub
	level   int
	ch      chan Record
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe starts receiving records from level up; buffer bounds how many
// wait unread before new ones are dropped.
func (h *Hub) Subscribe(level, buffer int) *Subscription {
	s := &Subscription{h: h, level: level, ch: make(chan Record, max(buffer, 1))}
	h.mu.Lock()
	h.subs = append(h.subs, s)
	h.updateMinLocked()
	h.mu.Unlock()
	return s
}

// C delivers the records.
func (s *Subscription) C() <-chan Record { return s.ch }

// Dropped counts the records lost because the subscriber was behind.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close stops the subscription; C is not closed (a send may race), so
// readers select on their own done signal.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.h
		h.mu.Lock()
		h.subs = slices.DeleteFunc(h.subs, func(x *Subscription) bool { return x == s })
		h.updateMinLocked()
		h.mu.Unlock()
	})
}

func (h *Hub) updateMinLocked() {
	m := noSubscribers
	for _, s := range h.subs {
		m = min(m, toSlog(s.level))
	}
	h.min.Store(int64(m))
}

func (h *Hub) wants(l slog.Level) bool { return l >= slog.Level(h.min.Load()) }

func (h *Hub) publish(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		if r.Level < s.level {
			continue
		}
		select {
		case s.ch <- r:
		default:
			s.dropped.Add(1)
		}
	}
}

// Handler returns a handler that logs to next and feeds the hub.
func (h *Hub) Handler(next slog.Handler) slog.Handler { return &handler{hub: h, next: next} }

type handler struct {
	hub    *Hub
	next   slog.Handler
	attrs  []slog.Attr // bound with WithAttrs, keys already prefixed with the groups
	groups string      // "a.b." for WithGroup("a").WithGroup("b")
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l) || h.hub.wants(l)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.next.Enabled(ctx, r.Level) {
		err = h.next.Handle(ctx, r)
	}
	if h.hub.wants(r.Level) {
		h.hub.publish(h.record(r))
	}
	return err
}

func (h *handler) record(r slog.Record) Record {
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	rec := Record{Hostname: h.hub.hostname, Level: FromSlog(r.Level), Msg: redact.AuthParams(r.Message),
		PID: h.hub.pid, Service: h.hub.service, Time: at.UnixMilli(),
		Timestamp: at.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	if n := len(h.attrs) + r.NumAttrs(); n > 0 {
		rec.Attrs = make(map[string]any, n)
	}
	for _, a := range h.attrs {
		addAttr(rec.Attrs, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(rec.Attrs, h.groups, a)
		return true
	})
	// A subsystem that names itself (the demo's simulator) is the
	// record's service, as NestMTX tags its processes.
	if c, ok := rec.Attrs["component"].(string); ok {
		rec.Service = h.hub.service + "/" + c
		delete(rec.Attrs, "component")
	}
	return rec
}

func addAttr(m map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			addAttr(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindString:
		m[prefix+a.Key] = redact.AuthParams(v.String())
	case slog.KindTime:
		m[prefix+a.Key] = v.Time().UTC().Format(time.RFC3339Nano)
	case slog.KindDuration:
		m[prefix+a.Key] = v.Duration().String()
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			m[prefix+a.Key] = redact.AuthParams(err.Error())
			return
		}
		m[prefix+a.Key] = redact.AuthParams(v.String())
	default:
		m[prefix+a.Key] = v.Any()
	}
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	c.attrs = slices.Clip(h.attrs)
	for _, a := range as {
		a.Key = h.groups + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.groups = h.groups + name + "."
	return &c
}
