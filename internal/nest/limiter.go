package nest

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Limits are rolling-window quotas. A value <= 0 disables that limit; a
// Window <= 0 means one minute, the unit of all of Google's SDM quotas.
type Limits struct {
	PerCredential    int // commands per Window for the whole credential (Google: 10 QPM per user)
	PerDeviceCommand int // commands per Window for one device+command (Google: 5 QPM)
	Window           time.Duration
}

// windowMargin widens Google's one-minute window on our side. The limiter
// stamps a command when it is sent; Google counts it when it arrives, a
// variable latency later. With a window of exactly a minute, a burst whose
// first commands arrived late lets the eleventh arrive inside Google's
// window: a 429, and a minute's penalty for every camera. A few seconds of
// margin cost one slot in the worst case and avoid that.
const windowMargin = 3 * time.Second

// DefaultLimits matches Google's Sandbox executeCommand quotas.
func DefaultLimits() Limits {
	return Limits{PerCredential: 10, PerDeviceCommand: 5, Window: time.Minute + windowMargin}
}

// penaltyJitter spreads the restart after a 429 so that several daemons (or
// several limiters on one daemon) sharing a Google user do not all retry in
// the same instant.
const penaltyJitter = 5 * time.Second

// Limiter keeps a credential under Google's quotas by making callers wait
// instead of collecting 429s. Waiters are considered strictly in arrival
// order; a waiter blocked only by its own device+command limit does not hold
// up later waiters for other devices, but whenever a credential slot frees
// up the earliest waiter that can use it gets it, so no camera starves.
type Limiter struct {
	limits Limits
	now    func() time.Time
	sleep  func(context.Context, time.Duration) error

	mu      sync.Mutex
	all     []time.Time            // start times in the window, oldest first
	perKey  map[string][]time.Time // same, per device+command
	penalty time.Time              // nothing starts before this
	queue   []*waiter
}

type waiter struct {
	key     string
	prio    int  // lower goes first; see commandPriority
	urgent  bool // may use the slots a Stop normally leaves free (WithReserve)
	granted bool
	wake    context.CancelFunc // cuts the waiter's sleep short once granted
}

// QuotaWait tells a caller that its command waits for the quota.
type QuotaWait struct {
	// Until is about when the command can be sent: exact for a penalty or
	// a free slot, an estimate when other commands are queued ahead.
	Until time.Time
	// Penalized: Google answered 429 and nothing is sent before Until.
	Penalized bool
	// Ahead counts the commands queued before this one.
	Ahead int
	// PerWindow and Window are the credential's quota, for messages.
	PerWindow int
	Window    time.Duration
}

type quotaNoticeKey struct{}
type reserveKey struct{}

// WithQuotaNotice makes Wait call fn (outside the limiter's lock) each time
// the command must wait, so that a caller can say why it is not done yet.
func WithQuotaNotice(ctx context.Context, fn func(QuotaWait)) context.Context {
	return context.WithValue(ctx, quotaNoticeKey{}, fn)
}

// WithReserve lets a Stop use the slots Stops normally leave to extensions
// and starts: a Stop at shutdown, or of a session whose readers all left,
// is the last word on that session and worth a reserved slot.
func WithReserve(ctx context.Context) context.Context {
	return context.WithValue(ctx, reserveKey{}, true)
}

// NewLimiter uses the real clock.
func NewLimiter(l Limits) *Limiter {
	return NewLimiterWithClock(l, time.Now, sleepCtx)
}

// NewLimiterWithClock lets tests drive time. sleep must return early with
// ctx.Err() when ctx is done: the limiter cancels a sleeper's context to
// wake it as soon as another waiter's scan has granted it a slot.
func NewLimiterWithClock(l Limits, now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) *Limiter {
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	return &Limiter{limits: l, now: now, sleep: sleep, perKey: map[string][]time.Time{}}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Limits returns the configured quotas.
func (l *Limiter) Limits() Limits { return l.limits }

// Wait blocks until a command for device may start under both limits and
// records it as started. It returns ctx.Err() if ctx ends first, in which
// case no slot is consumed.
func (l *Limiter) Wait(ctx context.Context, device, command string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &waiter{key: device + "\x00" + command, prio: commandPriority(command)}
	w.urgent, _ = ctx.Value(reserveKey{}).(bool)
	notice, _ := ctx.Value(quotaNoticeKey{}).(func(QuotaWait))
	l.mu.Lock()
	l.queue = append(l.queue, w)
	for {
		now := l.now()
		l.grantLocked(now)
		if w.granted {
			break
		}
		d := l.nextChangeLocked(now).Sub(now)
		if d <= 0 {
			continue
		}
		var info QuotaWait
		if notice != nil {
			info = l.estimateLocked(w, now)
		}
		sctx, cancel := context.WithCancel(ctx)
		w.wake = cancel
		l.mu.Unlock()
		if notice != nil {
			notice(info)
		}
		_ = l.sleep(sctx, d) // woken early by grant or ctx; both re-checked below
		cancel()
		l.mu.Lock()
		w.wake = nil
		if w.granted {
			break
		}
		if err := ctx.Err(); err != nil {
			l.removeLocked(w)
			l.mu.Unlock()
			return err
		}
	}
	l.mu.Unlock()
	return nil
}

// Penalize stops every command from starting until d (the caller passes the
// window; <= 0 means the window) plus up to 5 s of jitter has passed. Called
// after a 429: Google's bucket is already empty, whatever our count says.
func (l *Limiter) Penalize(d time.Duration) {
	if d <= 0 {
		d = l.limits.Window
	}
	until := l.now().Add(d + rand.N(penaltyJitter))
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.penalty) {
		l.penalty = until
	}
}

// LimiterStats is a snapshot for health reporting.
type LimiterStats struct {
	InWindow       int       // commands started within the current rolling window
	Waiters        int       // callers blocked in Wait
	PenalizedUntil time.Time // zero unless a 429 penalty is still running
}

// Stats returns a snapshot.
func (l *Limiter) Stats() LimiterStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.pruneLocked(now)
	st := LimiterStats{InWindow: len(l.all), Waiters: len(l.queue)}
	if now.Before(l.penalty) {
		st.PenalizedUntil = l.penalty
	}
	return st
}

func (l *Limiter) pruneLocked(now time.Time) {
	cutoff := now.Add(-l.limits.Window)
	l.all = dropExpired(l.all, cutoff)
	for k, ts := range l.perKey {
		if ts = dropExpired(ts, cutoff); len(ts) == 0 {
			delete(l.perKey, k)
		} else {
			l.perKey[k] = ts
		}
	}
}

// dropExpired removes starts at or before cutoff: a slot taken at t frees
// exactly at t+Window.
func dropExpired(ts []time.Time, cutoff time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(cutoff) {
		i++
	}
	if i == 0 {
		return ts
	}
	return append(ts[:0], ts[i:]...)
}

// commandPriority orders waiters when the quota is short. An extension
// keeps a live stream alive with one command, where losing the session costs
// a Generate and an outage; a Stop is only courtesy (the session expires by
// itself). The same holds for RTSP and WebRTC sessions. Equal priorities
// go in arrival order.
func commandPriority(command string) int {
	switch command {
	case CmdExtendRtspStream, CmdExtendWebRtcStream:
		return 0
	case CmdStopRtspStream, CmdStopWebRtcStream:
		return 2
	}
	return 1
}

// reserveFor is how many of the credential's slots a command of priority
// prio must leave free. A Stop only saves Google a session that will
// expire anyway, so it never takes the last fifth of the quota: that stays
// for the extensions and starts that keep cameras up. This holds for every
// Stop, RTSP or WebRTC: both share the Stop priority. (In an hour's soak
// with one-minute sessions, a Stop taking the last slot made an extension
// wait past its session's expiry.)
func (l *Limiter) reserveFor(w *waiter) int {
	if w.prio == commandPriority(CmdStopRtspStream) && !w.urgent {
		return l.limits.PerCredential / 5
	}
	return 0
}

// grantLocked hands free slots to waiters by priority, then arrival order.
func (l *Limiter) grantLocked(now time.Time) {
	l.pruneLocked(now)
	if now.Before(l.penalty) {
		return
	}
	for prio := 0; prio <= 2; prio++ {
		l.grantPriorityLocked(now, prio)
	}
	kept := l.queue[:0]
	for _, w := range l.queue {
		if !w.granted {
			kept = append(kept, w)
		}
	}
	clear(l.queue[len(kept):])
	l.queue = kept
}

func (l *Limiter) grantPriorityLocked(now time.Time, prio int) {
	for _, w := range l.queue {
		if w.granted || w.prio != prio {
			continue
		}
		credOK := l.limits.PerCredential <= 0 || len(l.all) < l.limits.PerCredential-l.reserveFor(w)
		keyOK := l.limits.PerDeviceCommand <= 0 || len(l.perKey[w.key]) < l.limits.PerDeviceCommand
		if credOK && keyOK {
			l.all = append(l.all, now)
			if l.limits.PerDeviceCommand > 0 {
				l.perKey[w.key] = append(l.perKey[w.key], now)
			}
			w.granted = true
			if w.wake != nil {
				w.wake()
			}
		}
	}
}

// nextChangeLocked is the earliest instant at which a grant could become
// possible. Every per-key start is also in l.all, so the oldest overall
// start bounds them all; a waiter that wakes and still cannot go simply
// sleeps again.
func (l *Limiter) nextChangeLocked(now time.Time) time.Time {
	if now.Before(l.penalty) {
		return l.penalty
	}
	if len(l.all) > 0 {
		return l.all[0].Add(l.limits.Window)
	}
	return now.Add(l.limits.Window) // unreachable with sane limits; never spin
}

// estimateLocked says about when w will get a slot: after a penalty, or
// when as many of the window's starts have aged out as there are commands
// ahead of it (the starts age out oldest first, a window after each).
func (l *Limiter) estimateLocked(w *waiter, now time.Time) QuotaWait {
	info := QuotaWait{PerWindow: l.limits.PerCredential, Window: l.limits.Window}
	for _, q := range l.queue {
		if q == w {
			break
		}
		if !q.granted && q.prio <= w.prio {
			info.Ahead++
		}
	}
	if now.Before(l.penalty) {
		info.Until, info.Penalized = l.penalty, true
		return info
	}
	info.Until = l.nextChangeLocked(now)
	limit := l.limits.PerCredential - l.reserveFor(w)
	if limit <= 0 || len(l.all) == 0 {
		return info
	}
	// The j-th start to age out frees the slot w needs; beyond the starts
	// in the window, each further window frees limit more.
	j := info.Ahead + len(l.all) - limit
	if j < 0 {
		return info // blocked by its own device's limit: the next change
	}
	rounds := j / len(l.all)
	at := l.all[j%len(l.all)].Add(l.limits.Window * time.Duration(rounds+1))
	if at.After(info.Until) {
		info.Until = at
	}
	return info
}

func (l *Limiter) removeLocked(w *waiter) {
	for i, q := range l.queue {
		if q == w {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			return
		}
	}
}
