package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// How old is a request? MQTT v5 gives a message no timestamp, so the daemon
// bounds the age of what its durable session delivers from what it knows:
//
//   - A request delivered as it was sent (the daemon connected and caught up)
//     has waited only in the daemon's own queue.
//   - While the daemon is away the broker queues requests in its session, and
//     delivers that backlog when the session resumes. Such a request was sent
//     after the daemon lost the connection (or at most one keepalive and a
//     half earlier, when the loss was found by a keepalive timeout), so its
//     age is at most the time since then: the outage and what followed. The
//     daemon refuses it when that bound passes Options.RequestMaxAge, since
//     it can be sure only that the request is not older than that. The bound
//     is exact for the requests sent just after the loss and pessimistic for
//     those sent just before the return, which matters only for an outage
//     longer than the limit: then the whole backlog is refused, each request
//     with an answer telling its sender to send it again, rather than a
//     request sent minutes ago (a "delete") being executed now.
//   - Which requests are the backlog: the broker delivers a session's queue
//     in order and queues new messages behind it, so on resuming the daemon
//     publishes a marker to its own request topic; what arrives before the
//     marker is the backlog (the backlog window), what arrives after it was
//     sent while the daemon was connected. The replies to the backlog wait
//     until the marker is sent, so that a request sent in reaction to one is
//     never taken for the backlog. Should the marker not come back (an ACL
//     that denies it), the window closes after backlogMarkerWait.
//   - On its first connection the daemon resumes the session its previous
//     run left, with what was sent while it restarted. It learns when that
//     run left from the retained offline status a clean shutdown publishes:
//     it carries a Message Expiry Interval, which the broker counts down
//     while it holds the message, so what is left of it says how long ago it
//     was published. After a crash the status is the Last Will, which carries
//     no expiry (paho.golang v0.23 drops a Will's Message Expiry Interval):
//     the age is then unknown, but not above the session expiry, after which
//     the broker drops the session, and the backlog is refused when that is
//     above the limit.
//   - A request that carries its own Message Expiry Interval is refused when
//     it ran out while the request waited in the daemon's queue (the broker
//     drops the ones that run out in its hands).

// propBacklogEnd is the user property of the daemon's backlog marker.
const propBacklogEnd = "nestmtx-backlog-end"

// backlogMarkerWait bounds a backlog window whose marker does not return.
const backlogMarkerWait = 10 * time.Second

// departureWait bounds the wait for the retained status on the first
// connection; a request of the backlog waits for it that long at most.
const departureWait = 3 * time.Second

// backlogWindow is one stretch during which requests may have waited in the
// broker: from the loss of the connection (or, for a session an earlier run
// left, from that run's departure) until the broker delivered the queue.
type backlogWindow struct {
	settled chan struct{}
	once    sync.Once
	// sent is closed once the marker was handed to the broker (or the
	// window closed without one).
	sent     chan struct{}
	sentOnce sync.Once

	mu    sync.Mutex
	since time.Time // requests of the window were sent after this
	known bool
	nonce string
}

func newBacklogWindow() *backlogWindow {
	return &backlogWindow{settled: make(chan struct{}), sent: make(chan struct{})}
}

func (w *backlogWindow) markerSent() { w.sentOnce.Do(func() { close(w.sent) }) }

// awaitMarker holds a reply to a request of the backlog until the marker is
// on its way (backlogMarkerWait at most).
func (w *backlogWindow) awaitMarker(ctx context.Context) {
	t := time.NewTimer(backlogMarkerWait)
	defer t.Stop()
	select {
	case <-w.sent:
	case <-t.C:
	case <-ctx.Done():
	}
}

// settle records when the window began; known false: not known.
func (w *backlogWindow) settle(since time.Time, known bool) {
	w.once.Do(func() {
		w.mu.Lock()
		w.since, w.known = since, known
		w.mu.Unlock()
		close(w.settled)
	})
}

func (w *backlogWindow) isSettled() bool {
	select {
	case <-w.settled:
		return true
	default:
		return false
	}
}

// began waits until the start is settled (wait at most) and returns it.
func (w *backlogWindow) began(wait time.Duration) (time.Time, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.settled:
	case <-t.C:
		return time.Time{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.since, w.known
}

func (w *backlogWindow) setNonce(n string) {
	w.mu.Lock()
	w.nonce = n
	w.mu.Unlock()
}

func (w *backlogWindow) nonceIs(n string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nonce != "" && w.nonce == n
}

// markBacklogEnd sends the marker that closes the window w once the broker
// has delivered what it queued before it. It runs as soon as the session
// resumed, before anything else is published.
func (s *Service) markBacklogEnd(w *backlogWindow, gen uint64) {
	defer s.wg.Done()
	defer w.markerSent()
	select {
	case <-s.started:
	case <-s.ctx.Done():
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	w.setNonce(nonce)
	time.AfterFunc(backlogMarkerWait, func() {
		// Unless the connection changed meanwhile: then what the window
		// waited for may still be queued.
		if c := s.conn.Load(); c != nil && c.gen == gen && s.window.CompareAndSwap(w, nil) {
			s.log.Warn("the MQTT broker did not return the daemon's backlog marker; may the daemon publish to its request topic?",
				"topic", s.topics.requests)
		}
	})
	ctx, cancel := context.WithTimeout(s.ctx, backlogMarkerWait)
	defer cancel()
	err := s.send(ctx, &paho.Publish{Topic: s.topics.requests, QoS: 1, Properties: &paho.PublishProperties{
		User: paho.UserProperties{{Key: propBacklogEnd, Value: nonce}}}}, false)
	if err != nil {
		s.log.Debug("backlog marker not sent", "error", err)
	}
}

// readDeparture learns when the daemon's previous run left the broker, from
// the retained offline status it left (see the comment at the top).
func (s *Service) readDeparture(ctx context.Context) (time.Time, bool) {
	ch := make(chan *paho.Publish, 4)
	s.statusWatch.Store(&ch)
	defer s.statusWatch.Store(nil)
	if _, err := s.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: s.topics.status, QoS: 1},
	}}); err != nil {
		s.log.Debug("reading the retained status", "error", err)
		return time.Time{}, false
	}
	defer func() {
		uctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		_, _ = s.cm.Unsubscribe(uctx, &paho.Unsubscribe{Topics: []string{s.topics.status}})
	}()
	t := time.NewTimer(departureWait)
	defer t.Stop()
	select {
	case p := <-ch:
		now := time.Now()
		if string(p.Payload) != "offline" || p.Properties == nil || p.Properties.MessageExpiry == nil ||
			*p.Properties.MessageExpiry > statusExpiry {
			return time.Time{}, false
		}
		held := time.Duration(statusExpiry-*p.Properties.MessageExpiry) * time.Second
		// The broker counts whole seconds.
		left := now.Add(-held - time.Second)
		s.log.Info("resumed the MQTT session of an earlier run", "left", held.Round(time.Second).String()+" ago")
		return left, true
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Time{}, false
}

// expired says why a request must not be executed any more, or "".
func (s *Service) expired(in inbound, props paho.PublishProperties) string {
	limit := s.opts.RequestMaxAge
	now := time.Now()
	queued := now.Sub(in.at)
	if e := props.MessageExpiry; e != nil && queued > time.Duration(*e)*time.Second {
		return fmt.Sprintf("request expired: its Message Expiry Interval (%s left on arrival) ran out while it waited %s in the daemon's queue; send it again",
			fmtDuration(time.Duration(*e)*time.Second), fmtDuration(queued))
	}
	if in.window == nil {
		if queued > limit {
			return fmt.Sprintf("request expired: it waited %s in the daemon's queue (limit %s); send it again",
				fmtDuration(queued), fmtDuration(limit))
		}
		return ""
	}
	since, known := in.window.began(departureWait + time.Second)
	if !known {
		if s.opts.SessionExpiry > limit {
			return fmt.Sprintf("request expired: it waited in the broker while the daemon was away, for an unknown time of up to %s (limit %s); send it again",
				fmtDuration(s.opts.SessionExpiry), fmtDuration(limit))
		}
		return ""
	}
	if age := now.Sub(since); age > limit {
		return fmt.Sprintf("request expired: it waited up to %s in the broker while the daemon was away (limit %s); send it again",
			fmtDuration(age), fmtDuration(limit))
	}
	return ""
}

// fmtDuration prints 5m rather than 5m0s, and whole seconds above a minute.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Minute:
		d = d.Round(time.Second)
	case d >= time.Second:
		d = d.Round(100 * time.Millisecond)
	default:
		d = d.Round(time.Millisecond)
	}
	v := d.String()
	if strings.HasSuffix(v, "m0s") {
		v = strings.TrimSuffix(v, "0s")
	}
	if strings.HasSuffix(v, "h0m") {
		v = strings.TrimSuffix(v, "0m")
	}
	return v
}
