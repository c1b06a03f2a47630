// Package netguard wraps the daemon's listeners (RTSP, MQTT, HTTP) so that
// they keep serving through abuse and resource exhaustion.
//
// Why: gortsplib's and mochi-mqtt's accept loops return on the first Accept
// error, so one EMFILE (the process at RLIMIT_NOFILE, which a burst of
// clients or a leak elsewhere can cause) stopped them for the rest of the
// process's life while the daemon looked alive. Accept here retries
// temporary errors with net/http's backoff instead, so those loops only end
// when the listener is closed. The same wrapper bounds what a client can
// hold: a connection cap, and handshake, idle and request timeouts for
// clients that connect and never speak, go quiet, or trickle a request
// byte by byte.
//
// The timeouts use no read deadlines and no per-Read timers: the libraries
// set their own deadlines, which ours would overwrite, and a timer per Read
// would cost more than the read on a busy RTSP connection. Each Conn records
// its last read in an atomic, and one sweeper goroutine per Listener closes
// the connections that overran.
package netguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Options configure a Listener. A zero limit or timeout disables it.
type Options struct {
	Name             string        // "rtsp", "mqtt", "http": in log lines and Status
	MaxConns         int           // 0 = unlimited; at the cap new connections are accepted and closed at once
	HandshakeTimeout time.Duration // 0 = none; Established must be called within this
	IdleTimeout      time.Duration // 0 = none; a connection that reads nothing for this long is closed, unless Streaming
	RequestTimeout   time.Duration // 0 = none; RequestDone must follow the first byte of a request within this, unless Streaming
	Log              *slog.Logger
}

// Status is a listener's health, for health checks and tests.
type Status struct {
	Name      string
	Accepting bool      // false while Accept is backing off on errors
	Since     time.Time // when Accepting last changed
	LastError string    // the last accept error, "" if none
	Open      int       // connections open now
	Refused   uint64    // closed at once because of MaxConns, since start
	TimedOut  uint64    // closed by the handshake/idle/request timeouts, since start
}

// The accept backoff is net/http's Server.Serve: short enough that a
// transient error costs clients nothing noticeable, capped so that an
// exhausted process does not spin on a listener that stays readable.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// The sweeper need not be finer than a quarter of the shortest timeout;
// the bounds keep it from spinning on tiny timeouts or lagging on long ones.
const (
	minSweep = 250 * time.Millisecond
	maxSweep = time.Second
)

// refusalLogEvery bounds the connection-limit warnings: under a flood one
// line a minute says all an operator needs.
const refusalLogEvery = time.Minute

// Accept failures come in episodes that can flap: at the descriptor limit
// each descriptor freed lets one accept succeed before the next fails, and
// a Warn and an Info per flap would flood the log. So an episode is logged
// when it starts unless another was within episodeLogEvery, and anyway once
// it has lasted episodeWarnAfter, which is an outage and not a flap.
const (
	episodeLogEvery  = time.Minute
	episodeWarnAfter = time.Second
)

// Listener is a net.Listener whose Accept survives temporary errors and
// whose connections are bounded by Options.
type Listener struct {
	inner net.Listener
	o     Options
	log   *slog.Logger
	// epoch anchors the Conns' clocks: monotonic offsets from it, not wall
	// time, so that a clock step (NTP on a NAS without an RTC) neither
	// closes every connection at once nor exempts them all.
	epoch time.Time
	// watchReads is false when no timeout looks at reads: Read then costs
	// nothing more than the inner Read.
	watchReads bool

	done      chan struct{}
	closeOnce sync.Once
	sweeper   sync.WaitGroup

	mu        sync.Mutex
	conns     map[*Conn]struct{}
	accepting bool
	since     time.Time // while failing, when the episode began
	lastErr   string
	warned    bool      // the current failure episode was logged
	lastWarn  time.Time // zero: none yet
	unlogged  uint64    // failure episodes too brief to log, since the last warning

	refused        uint64
	timedOut       uint64
	refusedUnlog   uint64    // refused since the last warning
	lastRefusalLog time.Time // zero: none yet
}

// Listen listens on network and address and wraps the listener.
func Listen(network, address string, o Options) (*Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return Wrap(ln, o), nil
}

// Wrap guards ln. The Listener owns ln: Close closes it.
func Wrap(ln net.Listener, o Options) *Listener {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	l := &Listener{
		inner: ln, o: o, log: log.With("listener", o.Name), epoch: now,
		done: make(chan struct{}), conns: map[*Conn]struct{}{},
		accepting: true, since: now, watchReads: o.IdleTimeout > 0 || o.RequestTimeout > 0,
	}
	if tick, ok := sweepInterval(o); ok {
		l.sweeper.Add(1)
		go l.sweep(tick)
	}
	return l
}

func sweepInterval(o Options) (time.Duration, bool) {
	var shortest time.Duration
	for _, d := range []time.Duration{o.HandshakeTimeout, o.IdleTimeout, o.RequestTimeout} {
		if d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	if shortest == 0 {
		return 0, false
	}
	return min(max(shortest/4, minSweep), maxSweep), true
}

// Accept returns the next connection, as a *Conn. Temporary errors
// (EMFILE, ENFILE, ENOBUFS, ECONNABORTED...) are retried, never returned:
// callers' accept loops give up on any error. It returns an error only once
// the listener is closed (net.ErrClosed) or on a permanent error.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !temporary(err) {
				return nil, err
			}
			l.acceptFailed(err)
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil, &net.OpError{Op: "accept", Net: l.inner.Addr().Network(), Addr: l.inner.Addr(), Err: net.ErrClosed}
			}
			continue
		}
		delay = 0
		l.acceptOK()
		if gc := l.admit(c); gc != nil {
			return gc, nil
		}
	}
}

func (l *Listener) acceptFailed(err error) {
	now := time.Now()
	l.mu.Lock()
	l.lastErr = err.Error()
	if l.accepting {
		l.accepting, l.since, l.warned = false, now, false
	}
	warn := !l.warned && (l.lastWarn.IsZero() || now.Sub(l.lastWarn) >= episodeLogEvery ||
		now.Sub(l.since) >= episodeWarnAfter)
	var unlogged uint64
	if warn {
		l.warned, l.lastWarn = true, now
		unlogged, l.unlogged = l.unlogged, 0
	}
	l.mu.Unlock()
	if !warn {
		return
	}
	args := []any{"error", err}
	if unlogged > 0 {
		args = append(args, "brief_failures_not_logged", unlogged)
	}
	l.log.Warn(l.o.Name+" listener: accept failed; retrying", args...)
}

func (l *Listener) acceptOK() {
	l.mu.Lock()
	if l.accepting {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	failedFor := now.Sub(l.since)
	l.accepting, l.since = true, now
	logged := l.warned
	if !logged {
		l.unlogged++
	}
	l.mu.Unlock()
	if logged {
		l.log.Info(l.o.Name+" listener: accepting again", "failed_for", failedFor.Round(time.Millisecond))
	}
}

// admit wraps c, or refuses it at the cap and returns nil. The cap is
// enforced after accept, not by leaving connections in the backlog: a full
// backlog would stall clients silently, where a prompt close tells them.
func (l *Listener) admit(c net.Conn) *Conn {
	l.mu.Lock()
	if l.o.MaxConns > 0 && len(l.conns) >= l.o.MaxConns {
		l.refused++
		l.refusedUnlog++
		var n uint64
		if now := time.Now(); l.lastRefusalLog.IsZero() || now.Sub(l.lastRefusalLog) >= refusalLogEvery {
			n, l.refusedUnlog, l.lastRefusalLog = l.refusedUnlog, 0, now
		}
		l.mu.Unlock()
		if n > 0 {
			l.log.Warn(fmt.Sprintf("%s listener: connection limit %d reached; refusing new connections", l.o.Name, l.o.MaxConns),
				"refused", n)
		}
		// A reset rather than a FIN: a flood of refusals must not leave
		// this side with a TIME_WAIT socket for each.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		return nil
	}
	now := l.now()
	gc := &Conn{Conn: c, l: l, accepted: now}
	gc.lastRead.Store(now)
	l.conns[gc] = struct{}{}
	l.mu.Unlock()
	return gc
}

// forget drops c from the open set; Conn calls it exactly once.
func (l *Listener) forget(c *Conn, timedOut bool) {
	l.mu.Lock()
	delete(l.conns, c)
	if timedOut {
		l.timedOut++
	}
	l.mu.Unlock()
}

// now is the Conns' clock: nanoseconds since the epoch, never 0, so that 0
// can mean "not set".
func (l *Listener) now() int64 { return int64(time.Since(l.epoch)) + 1 }

// Close closes the listener and stops the sweeper. Open connections stay
// open: their owners (the servers) close them on their own shutdown.
func (l *Listener) Close() error {
	err := l.inner.Close()
	l.closeOnce.Do(func() { close(l.done) })
	l.sweeper.Wait()
	return err
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Status reports the listener's state now.
func (l *Listener) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Status{
		Name: l.o.Name, Accepting: l.accepting, Since: l.since, LastError: l.lastErr,
		Open: len(l.conns), Refused: l.refused, TimedOut: l.timedOut,
	}
}

type expiry struct {
	c   *Conn
	why string
}

func (l *Listener) sweep(tick time.Duration) {
	defer l.sweeper.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	var due []expiry
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		now := l.now()
		l.mu.Lock()
		for c := range l.conns {
			if why := c.overdue(now, &l.o); why != "" {
				due = append(due, expiry{c, why})
			}
		}
		l.mu.Unlock()
		// Closed outside the lock: Close may block briefly, and Accept and
		// every other Close need the lock.
		for _, e := range due {
			e.c.expire(e.why, now)
		}
		clear(due) // do not keep closed conns reachable until the next sweep
		due = due[:0]
	}
}
