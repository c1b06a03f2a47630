// Package framebatch wraps the RTSP server's TCP connections so that two
// writers can share them: gortsplib, which writes its RTSP responses, and
// the relay's direct path (internal/relay), which writes each reader's
// media as batches of whole interleaved access units, one writev(2) per
// batch instead of gortsplib's one write(2) per packet.
//
// Why: at 1080p30 and 4 Mbit/s gortsplib makes about 430 write calls a
// second per reader; with 50 readers the system calls cost more than the
// rest of the relay together (measured with scripts/bench-relay.sh).
// gortsplib has no batch API, but it lets the server supply its listener,
// so the shared connection lives here, under it.
//
// A batch may also be tried without waiting (TryWriteBuffers), so that the
// relay can write to every reader from one goroutine and leave only the
// slow ones to their own: what the socket does not take is kept and sent
// before anything else.
//
// One lock orders every write, so bytes never interleave mid-frame, and
// AfterResponse lets the media writer start only once the PLAY response is
// on the wire. Close does not take the lock: a write blocked on a stalled
// reader must end at once, since gortsplib relies on that to end a session.
package framebatch

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Listener accepts connections wrapped in Conn.
type Listener struct {
	net.Listener
}

// NewListener wraps ln.
func NewListener(ln net.Listener) *Listener {
	return &Listener{Listener: ln}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Conn is a net.Conn shared by gortsplib's writes and WriteBuffers.
type Conn struct {
	net.Conn

	mu sync.Mutex
	// err is the first write error; every later write returns it, as a
	// failed socket would.
	err error
	vec vectorWriter // the writev of WriteBuffers, TryWriteBuffers and Flush, without allocating
	// owed is the rest of a batch TryWriteBuffers could not finish; every
	// write sends it first, so a frame is never cut by another.
	owed net.Buffers
	// respGate, when set, is closed once the next RTSP message (anything
	// not an interleaved frame) has been written: see AfterResponse.
	respGate chan struct{}
	// Counters are atomic so that reading them never waits on a write
	// blocked under mu.
	writes, syscalls atomic.Uint64
}

// Stats count the writes, for tests and benchmarks.
type Stats struct {
	Writes   uint64 // Write, WriteBuffers and TryWriteBuffers calls
	Syscalls uint64 // the writes tried on the socket, with what was owed flushed apart
}

// Wrap wraps one connection.
func Wrap(c net.Conn) *Conn { return &Conn{Conn: c} }

// Unwrap returns the wrapped connection, so that code looking for a
// connection type underneath (internal/netguard's hooks) finds it.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Stats returns the counters so far.
func (c *Conn) Stats() Stats {
	return Stats{Writes: c.writes.Load(), Syscalls: c.syscalls.Load()}
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes.Add(1)
	if c.err != nil {
		return 0, c.err
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	c.syscalls.Add(1)
	n, err := c.Conn.Write(b)
	if err != nil {
		c.fail(err)
	} else if len(b) > 0 && b[0] != '$' {
		c.openGate()
	}
	return n, err
}

// WriteBuffers writes whole interleaved frames with one writev(2) where
// the socket supports it. The relay's direct path uses it to hand a reader
// several access units at once without copying them. The elements of bufs
// may be modified.
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
	c.syscalls.Add(1)
	if err := c.vec.write(c.Conn, bufs); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// TryResult is what TryWriteBuffers did with a batch.
type TryResult int

const (
	// TryBusy: nothing was written or kept. Another write holds the
	// connection, its write deadline has passed, or it has no socket to
	// try on; write the batch with WriteBuffers instead.
	TryBusy TryResult = iota
	// TryWritten: the whole batch is on the socket.
	TryWritten
	// TryOwed: the socket's buffer is full. The connection keeps what it
	// did not take and sends it before anything else; call Flush, which
	// waits, so that the reader is not left with part of a frame.
	TryOwed
)

// TryWriteBuffers writes whole interleaved frames with one writev(2) that
// never waits, neither for the socket nor for a write under way, so that
// one goroutine can feed many readers and a stalled one cannot hold up
// the others. The elements of bufs may be modified; on TryOwed the
// connection keeps references to them until Flush.
func (c *Conn) TryWriteBuffers(bufs net.Buffers) (TryResult, error) {
	if !c.mu.TryLock() {
		return TryBusy, nil
	}
	defer c.mu.Unlock()
	if c.err != nil {
		return TryBusy, c.err
	}
	if len(c.owed) > 0 {
		// A Flush is pending already: queue behind it.
		c.owed = append(c.owed, bufs...)
		return TryOwed, nil
	}
	c.writes.Add(1)
	c.syscalls.Add(1)
	n, ok, err := c.vec.try(c.Conn, bufs)
	switch {
	case !ok || errors.Is(err, os.ErrDeadlineExceeded):
		// A deadline set by an earlier write has passed: nothing was
		// sent, and the connection is fine. A waiting write sets its own.
		return TryBusy, nil
	case err != nil:
		c.fail(err)
		return TryBusy, err
	}
	rest := consume(bufs, n)
	if len(rest) == 0 {
		return TryWritten, nil
	}
	c.owed = append(c.owed[:0], rest...)
	return TryOwed, nil
}

// Flush sends what TryWriteBuffers kept, waiting for the socket as
// WriteBuffers does.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if len(c.owed) == 0 {
		return nil
	}
	c.syscalls.Add(1)
	err := c.vec.write(c.Conn, c.owed)
	clear(c.owed) // do not keep the relay's memory reachable
	c.owed = c.owed[:0]
	if err != nil {
		c.fail(err)
	}
	return err
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
	c.openGate()
	c.respGate = ch
	return ch
}

func (c *Conn) openGate() {
	if c.respGate != nil {
		close(c.respGate)
		c.respGate = nil
	}
}

func (c *Conn) fail(err error) {
	if c.err == nil {
		c.err = err
	}
	clear(c.owed)
	c.owed = nil
	c.openGate()
}

// SetWriteDeadline implements net.Conn. It is passed through at once: a
// writer blocked on a full socket sees it.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

// Close closes the socket first, without the lock, so that a write blocked
// on a stalled reader returns at once, then fails every later write.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	c.fail(net.ErrClosed)
	c.mu.Unlock()
	return err
}

// consume drops the first n bytes of bufs.
func consume(bufs net.Buffers, n int) net.Buffers {
	for len(bufs) > 0 {
		l := len(bufs[0])
		if l > n {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= l
		bufs = bufs[1:]
	}
	return bufs
}
