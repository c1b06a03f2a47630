package netguard

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// RTSP's framebatch writes with writev(2) through SyscallConn.
var _ syscall.Conn = (*Conn)(nil)

// Conn is what Listener.Accept returns. Reads are counted for the idle and
// request timeouts; everything else passes through to the accepted conn.
type Conn struct {
	net.Conn
	l        *Listener
	accepted int64 // l.now() at accept

	// Written by Read and the hooks, read by the sweeper: atomics, so that
	// a Read costs one store and never waits on the sweeper.
	lastRead    atomic.Int64 // l.now() of the last Read that returned bytes
	reqStart    atomic.Int64 // l.now() of the first byte since the last RequestDone; 0 if none
	established atomic.Bool
	streaming   atomic.Bool
	closed      atomic.Bool
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	// A streaming conn is exempt from the timeouts, and Streaming(false)
	// restarts both clocks: its reads (RTCP from a player) need no clock.
	if n > 0 && c.l.watchReads && !c.streaming.Load() {
		now := c.l.now()
		c.lastRead.Store(now)
		// A load first: the common case, a request already under way, then
		// costs no write to a shared cache line.
		if c.l.o.RequestTimeout > 0 && c.reqStart.Load() == 0 {
			c.reqStart.CompareAndSwap(0, now)
		}
	}
	return n, err
}

// Close implements net.Conn. The server and the sweeper may both close a
// conn; only the first Close counts it closed.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.forget(c, false)
	}
	return c.Conn.Close()
}

// expire closes c for a timeout unless it is already closed.
func (c *Conn) expire(why string, now int64) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	c.l.forget(c, true)
	// The address and the timeout only: never bytes the client sent.
	// Logged before the close, so that whoever sees the close sees the line.
	c.l.log.Debug(c.l.o.Name+" listener: closed a connection that timed out",
		"remote", c.Conn.RemoteAddr().String(), "timeout", why,
		"age", time.Duration(now-c.accepted).Round(time.Millisecond))
	_ = c.Conn.Close()
}

// overdue names the timeout c has overrun, or returns "".
func (c *Conn) overdue(now int64, o *Options) string {
	if o.HandshakeTimeout > 0 && !c.established.Load() && now-c.accepted > int64(o.HandshakeTimeout) {
		return "handshake"
	}
	if c.streaming.Load() {
		return ""
	}
	if o.IdleTimeout > 0 && now-c.lastRead.Load() > int64(o.IdleTimeout) {
		return "idle"
	}
	if o.RequestTimeout > 0 {
		if t := c.reqStart.Load(); t != 0 && now-t > int64(o.RequestTimeout) {
			return "request"
		}
	}
	return ""
}

// SyscallConn passes through to the accepted conn, so that a writer can
// issue writev(2) on the socket (internal/framebatch does). Bytes written
// that way bypass nothing here: only reads are watched.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite passes through to the accepted conn. net/http half-closes
// before closing after an error response so that the client reads the
// response rather than a reset; without this method it would skip that.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Unwrap returns the accepted conn.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// maxUnwrap bounds the walk through wrappers, against a wrapper that
// returns itself.
const maxUnwrap = 8

// find returns the *Conn inside c, following Unwrap() net.Conn methods
// (internal/framebatch's Conn) and NetConn() net.Conn (crypto/tls's Conn,
// should a server put TLS over a guarded listener).
func find(c net.Conn) *Conn {
	for range maxUnwrap {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Established marks c's handshake done (an MQTT CONNECT accepted, an RTSP
// request read): the handshake timeout no longer applies. It does nothing
// for a conn that is not from a Listener.
func Established(c net.Conn) {
	if g := find(c); g != nil {
		g.established.Store(true)
	}
}

// RequestDone marks a whole request read: the request timeout restarts with
// the next byte. It does nothing for a conn that is not from a Listener.
func RequestDone(c net.Conn) {
	if g := find(c); g != nil && g.reqStart.Load() != 0 {
		g.reqStart.Store(0)
	}
}

// Streaming exempts c from the idle and request timeouts while on: an RTSP
// reader playing over TCP may send nothing for as long as it plays. Turning
// it off restarts both timeouts from now, so that a long quiet stream is
// not taken for an idle conn the moment it ends. It does nothing for a conn
// that is not from a Listener.
func Streaming(c net.Conn, on bool) {
	g := find(c)
	if g == nil {
		return
	}
	if on {
		g.streaming.Store(true)
		return
	}
	if !g.streaming.Load() {
		return
	}
	// Reset before clearing the flag: the sweeper reads the flag first, so
	// it never pairs "not streaming" with the stale times.
	g.lastRead.Store(g.l.now())
	g.reqStart.Store(0)
	g.streaming.Store(false)
}

// ClientIP is a connection's remote address without its port: the client
// address that login throttling counts by, the same string whichever
// listener the client came through.
func ClientIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ClientIPOf(a.String())
}

// ClientIPOf is ClientIP for an address already written "host:port" (an
// HTTP request's RemoteAddr, a Socket.IO connection's): always the peer's
// address, never a header a client can write.
func ClientIPOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
