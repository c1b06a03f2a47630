// Package framebatch wraps the RTSP server's TCP connections so that the
// RTP packets of one access unit leave in one write(2) instead of one each.
//
// Why: gortsplib writes every interleaved RTP packet to its reader's socket
// with its own write call. At 1080p30 and 4 Mbit/s that is about 430 calls
// a second per reader, and with 50 readers the system calls alone cost more
// than the rest of the relay together (measured with
// scripts/bench-relay.sh). gortsplib has no batch API, but it lets the
// server supply its listener, so the batching lives here, under it.
//
// The policy: an interleaved RTP packet is held until the packet that ends
// its access unit (the RTP marker bit) arrives, then everything held leaves
// in one write. Anything else (an RTSP response, a frame that does not
// parse) flushes at once, after what is held, so the byte order on the wire
// is exactly the order of the Write calls. Two bounds keep a stream without
// markers honest: a flush once MaxPending bytes are held, and a timer that
// flushes whatever has waited MaxDelay.
//
// Write deadlines are applied at flush time, since that is when the socket
// is written. gortsplib asks for a new deadline before each packet; the
// underlying socket's deadline is only moved when it would change by more
// than deadlineSlack, which saves a runtime timer update per packet.
//
// The relay's direct path (internal/relay) writes to the same connections
// with WriteBuffers: several whole access units, already interleaved, in
// one writev(2), serialised with gortsplib's own writes by the same lock.
// AfterResponse lets it start only once the PLAY response is on the wire.
// With the direct path, gortsplib itself writes RTP only to readers it
// serves (UDP), so the batching above mostly covers RTCP and a fallback.
package framebatch

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultMaxPending holds about eleven 1400-byte packets: a typical
	// 4 Mbit/s P-frame leaves in one write, an I-frame in a handful.
	DefaultMaxPending = 16 << 10
	// DefaultMaxDelay bounds the latency a packet without a marker after it
	// can gain. Streams from our relay always end an access unit with one.
	DefaultMaxDelay = 10 * time.Millisecond

	deadlineSlack = time.Second
)

// Options tune the batching. Zero values take the defaults.
type Options struct {
	MaxPending int
	MaxDelay   time.Duration
}

func (o Options) withDefaults() Options {
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	return o
}

// Listener accepts connections wrapped in Conn.
type Listener struct {
	net.Listener
	opts Options
}

// NewListener wraps ln.
func NewListener(ln net.Listener, o Options) *Listener {
	return &Listener{Listener: ln, opts: o.withDefaults()}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(c, l.opts), nil
}

// Conn is a net.Conn whose writes are batched per access unit.
type Conn struct {
	net.Conn
	opts Options

	mu      sync.Mutex
	pending []byte
	// err is the first write error; every later Write returns it, as a
	// failed socket would.
	err error
	// wantDeadline is the last deadline asked for; setDeadline the one the
	// socket has.
	wantDeadline time.Time
	setDeadline  time.Time
	timer        *time.Timer
	timerArmed   bool
	vec          vectorWriter // WriteBuffers' writev, without allocating
	// respGate, when set, is closed once the next RTSP message (anything
	// not an interleaved frame) has been written: see AfterResponse.
	respGate chan struct{}
	// Counters are atomic so that reading them never waits on a write
	// blocked under mu.
	writes, flushes atomic.Uint64
}

// Stats count what the batching did, for tests and benchmarks.
type Stats struct {
	Writes  uint64 // Write calls
	Flushes uint64 // writes to the socket
}

func newConn(c net.Conn, o Options) *Conn {
	bc := &Conn{Conn: c, opts: o}
	bc.timer = time.AfterFunc(time.Hour, bc.flushOnTimer)
	bc.timer.Stop()
	return bc
}

// Wrap wraps one connection, for callers that accept their own.
func Wrap(c net.Conn, o Options) *Conn { return newConn(c, o.withDefaults()) }

// Stats returns the counters so far.
func (c *Conn) Stats() Stats {
	return Stats{Writes: c.writes.Load(), Flushes: c.flushes.Load()}
}

// Write implements net.Conn. A held packet reports success; a failure to
// send it later is returned by the next Write.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes.Add(1)
	if c.err != nil {
		return 0, c.err
	}
	hold, endsUnit := classify(b)
	if !hold {
		// Not an interleaved packet: whatever is held goes first, then b,
		// in one write when both fit the buffer.
		defer c.openGateLocked()
		if len(c.pending)+len(b) <= cap(c.pending) {
			c.pending = append(c.pending, b...)
			return len(b), c.flushLocked()
		}
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.writeLocked(b)
	}
	if c.pending == nil {
		c.pending = make([]byte, 0, c.opts.MaxPending+len(b))
	}
	if len(c.pending)+len(b) > cap(c.pending) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	c.pending = append(c.pending, b...)
	if endsUnit || len(c.pending) >= c.opts.MaxPending {
		return len(b), c.flushLocked()
	}
	if !c.timerArmed {
		c.timerArmed = true
		c.timer.Reset(c.opts.MaxDelay)
	}
	return len(b), nil
}

// AfterResponse returns a channel closed once the next RTSP message written
// to the connection (gortsplib's response to the request being handled) is
// on the socket, or the connection has failed. A media writer started while
// the PLAY request is answered waits on it, so that no packet precedes the
// PLAY response.
func (c *Conn) AfterResponse() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	if c.err != nil {
		close(ch)
		return ch
	}
	if c.respGate != nil {
		close(c.respGate)
	}
	c.respGate = ch
	return ch
}

func (c *Conn) openGateLocked() {
	if c.respGate != nil {
		close(c.respGate)
		c.respGate = nil
	}
}

// WriteBuffers writes whole interleaved frames, after whatever is held,
// with one writev(2) where the socket supports it. The relay's direct path
// uses it to hand a reader several access units at once without copying
// them. The elements of bufs may be modified.
func (c *Conn) WriteBuffers(bufs net.Buffers) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes.Add(1)
	if c.err != nil {
		return c.err
	}
	if err := c.flushLocked(); err != nil {
		return err
	}
	c.applyDeadlineLocked()
	c.flushes.Add(1)
	if err := c.vec.write(c.Conn, bufs); err != nil {
		c.err = err
		c.openGateLocked()
		return err
	}
	return nil
}

// classify tells whether b is one whole interleaved frame ('$', channel,
// 16-bit length, payload) worth holding, and whether it ends an access
// unit: an RTP packet with the marker bit. RTCP rides with the next flush.
func classify(b []byte) (hold, endsUnit bool) {
	if len(b) < 4 || b[0] != '$' || int(b[2])<<8|int(b[3]) != len(b)-4 {
		return false, false
	}
	p := b[4:]
	if len(p) < 2 || p[0]>>6 != 2 {
		return false, false // not RTP or RTCP version 2
	}
	// RTCP packet types 192-223 sit where RTP has marker + payload type;
	// RFC 5761 keeps RTP payload types out of that range.
	if p[1] >= 192 && p[1] <= 223 {
		return true, false
	}
	return true, p[1]&0x80 != 0
}

func (c *Conn) flushOnTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timerArmed = false
	if c.err == nil {
		c.flushLocked() //nolint:errcheck // kept in c.err for the next Write
	}
}

func (c *Conn) flushLocked() error {
	if c.timerArmed {
		c.timerArmed = false
		c.timer.Stop()
	}
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.pending)
	c.pending = c.pending[:0]
	return err
}

func (c *Conn) writeLocked(b []byte) (int, error) {
	c.applyDeadlineLocked()
	c.flushes.Add(1)
	n, err := c.Conn.Write(b)
	if err != nil {
		c.err = err
		c.openGateLocked()
	}
	return n, err
}

func (c *Conn) applyDeadlineLocked() {
	want := c.wantDeadline
	if want.Equal(c.setDeadline) {
		return
	}
	// Move the socket's deadline when the new one is earlier, clears it,
	// or lies more than deadlineSlack later: a writer that refreshes a
	// 10 s deadline per packet then costs one update a second.
	if want.IsZero() || c.setDeadline.IsZero() || want.Before(c.setDeadline) ||
		want.Sub(c.setDeadline) > deadlineSlack {
		c.Conn.SetWriteDeadline(want) //nolint:errcheck // the write reports a dead socket
		c.setDeadline = want
	}
}

// SetWriteDeadline implements net.Conn; it takes effect at the next write
// to the socket.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wantDeadline = t
	c.mu.Unlock()
	return nil
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(t)
}

// Close closes the socket first, without the lock, so that a write blocked
// on a stalled reader returns at once (gortsplib relies on that to end a
// session), then drops what is held.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.timerArmed {
		c.timerArmed = false
		c.timer.Stop()
	}
	c.pending = nil
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.openGateLocked()
	c.mu.Unlock()
	return err
}
