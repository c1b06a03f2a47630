package socketio

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	eiopacket "github.com/zishang520/socket.io/parsers/engine/v3/packet"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/logstream"
	"github.com/nestmtx/nestmtx/internal/netguard"
	"github.com/nestmtx/nestmtx/internal/store"
)

// conn is one logged-in Socket.IO connection.
type conn struct {
	s      *Server
	sock   *socket.Socket
	sid    string
	client string // "socketio:<sid>": api.Request.Client
	remote string // the client's IP

	// mu guards the login and the log subscription.
	mu      sync.Mutex
	token   string
	user    store.User
	expires time.Time
	ended   bool
	// logLevel is the level the client asked for (0: off); it is followed
	// only while the user is an admin.
	logLevel   int
	logRunning int // the level of logSub, 0 when none
	logSub     *logstream.Subscription
	logStop    chan struct{}

	// ready is closed once the socket is set up (holdUntilConnected).
	ready     chan struct{}
	readyOnce sync.Once

	closed   atomic.Bool // disconnected: nothing more is sent
	kicking  atomic.Bool
	inflight atomic.Int32
	gone     sync.Once

	// What was handed to the transport and what it has written, in bytes:
	// the difference is how far behind the client is.
	sendMu sync.Mutex
	sent   int64 // guarded by sendMu
	acked  atomic.Int64
}

// authenticate is the connection middleware: a valid token or no
// connection (the client gets connect_error).
func (s *Server) authenticate(sock *socket.Socket, next func(*socket.ExtendedError)) {
	h := sock.Handshake()
	remote := netguard.ClientIPOf(sock.Conn().RemoteAddress())
	refuse := func(e *api.Error) {
		s.log.Info("Socket.IO connection refused", "remote", remote, "code", e.Code, "reason", e.Message)
		next(socket.NewExtendedError(e.Message, e))
	}
	tok := handshakeToken(h)
	if tok == "" {
		refuse(api.NewError(api.CodeUnauthorized, "a bearer token is required: log in with auth create, then connect "+
			"with auth: {token}, an Authorization: Bearer <token> header, or ?token=<token>"))
		return
	}
	level, lerr := handshakeLogLevel(h, s.opts.DefaultLogLevel)
	if lerr != nil {
		refuse(lerr)
		return
	}
	user, exp, err := s.opts.Tokens.LookupToken(tok)
	if err != nil {
		if errors.Is(err, store.ErrTokenInvalid) {
			refuse(api.NewError(api.CodeUnauthorized, "the token is unknown or has expired; log in again with auth create"))
			return
		}
		s.log.Error("Socket.IO: looking up a connection's token", "error", err)
		refuse(api.NewError(api.CodeInternal, "the token could not be checked; the daemon's log has the cause"))
		return
	}
	sid := string(sock.Id())
	c := &conn{s: s, sock: sock, sid: sid, client: "socketio:" + sid, remote: remote,
		token: tok, user: user, expires: exp, logLevel: level, ready: make(chan struct{})}
	sock.SetData(c)
	holdUntilConnected(sock, c.ready)
	next(nil)
}

// connectWait bounds how long a client's packets wait for its connection
// to be set up (holdUntilConnected).
const connectWait = 5 * time.Second

// holdUntilConnected works around a race in the Socket.IO server: it
// sends the client its CONNECT packet before it records the socket in the
// client's namespaces, and a client quick to emit (many send at once what
// they queued) can have its first packet found in "invalid state", which
// closes the connection. The engine hands each packet to "packet"
// listeners, on the connection's reader goroutine, before the Socket.IO
// client sees it; this listener holds the client's messages until ready
// is closed (by onConnection, which runs once the socket is recorded).
func holdUntilConnected(sock *socket.Socket, ready <-chan struct{}) {
	_ = sock.Conn().On("packet", func(args ...any) {
		select {
		case <-ready:
			return
		default:
		}
		if len(args) == 0 {
			return
		}
		if p, ok := args[0].(*eiopacket.Packet); !ok || p.Type != eiopacket.MESSAGE {
			return
		}
		t := time.NewTimer(connectWait)
		defer t.Stop()
		select {
		case <-ready:
		case <-t.C:
		}
	})
}

// onConnection runs once the middleware let a socket in.
func (s *Server) onConnection(args ...any) {
	sock, _ := args[0].(*socket.Socket)
	if sock == nil {
		return
	}
	c, _ := sock.Data().(*conn)
	if c == nil {
		sock.Disconnect(true)
		return
	}
	defer c.setReady()
	if !s.register(c) {
		sock.Disconnect(true)
		return
	}
	_ = sock.On("request", c.onRequest)
	_ = sock.On("authenticate", c.onAuthenticate)
	_ = sock.On("log:level", c.onLogLevel)
	_ = sock.On("disconnect", func(reason ...any) { c.disconnected(reason...) })
	if !sock.Connected() {
		// Closed before the listener was there.
		c.disconnected("closed while connecting")
		return
	}
	c.mu.Lock()
	username, role := c.user.Username, c.user.Role
	c.applyLogsLocked()
	c.mu.Unlock()
	s.log.Info("Socket.IO client connected", "sid", c.sid, "username", username, "role", role,
		"remote", c.remote, "transport", sock.Conn().Transport().Name())
}

func (c *conn) setReady() { c.readyOnce.Do(func() { close(c.ready) }) }

// disconnected forgets the connection (once).
func (c *conn) disconnected(reason ...any) {
	c.setReady()
	c.gone.Do(func() {
		c.closed.Store(true)
		c.s.unregister(c)
		c.mu.Lock()
		c.stopLogsLocked()
		username := c.user.Username
		c.mu.Unlock()
		why := ""
		if len(reason) > 0 {
			why, _ = reason[0].(string)
		}
		c.s.log.Info("Socket.IO client disconnected", "sid", c.sid, "username", username, "reason", why)
	})
}

func (c *conn) username() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user.Username
}

// recheck looks the connection's token up again; false when it ended, and
// then the connection is ended too.
func (c *conn) recheck() bool {
	if c.closed.Load() {
		return false
	}
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	user, exp, err := c.s.opts.Tokens.LookupToken(tok)
	if err != nil && !errors.Is(err, store.ErrTokenInvalid) {
		c.s.log.Warn("Socket.IO: checking a connection's token again", "sid", c.sid, "error", err)
		return true
	}
	c.mu.Lock()
	if c.token != tok {
		// authenticate gave it a new token meanwhile.
		c.mu.Unlock()
		return true
	}
	if err != nil {
		c.mu.Unlock()
		c.end(api.NewError(api.CodeUnauthorized, "the connection's token has ended (expired, logged out, or its account "+
			"was disabled, deleted or given a new password); connect again with a new token"))
		return false
	}
	c.user, c.expires = user, exp
	c.applyLogsLocked() // the role may have changed
	c.mu.Unlock()
	return true
}

// end tells the client why on "failure", then disconnects it from the
// server's side (the client does not reconnect on its own with the dead
// token).
func (c *conn) end(why *api.Error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	username := c.user.Username
	c.mu.Unlock()
	c.s.log.Info("Socket.IO client disconnected: its token ended", "sid", c.sid, "username", username)
	c.send(frame(failureEvent, encodeAnswer(c.s.log, nil, why)), false)
	c.disconnected("token ended")
	// A namespace disconnect: the client learns it was the server's doing
	// (reason "io server disconnect", no reconnection) and closes the
	// transport itself. Closing the transport here could cut the frames
	// still queued (the engine closes the TCP connection without waiting
	// for its write queue), so the server only does so if the client has
	// not within endGrace.
	c.sock.Disconnect(false)
	eio := c.sock.Conn()
	time.AfterFunc(endGrace, func() {
		if eio.ReadyState() != "closed" {
			eio.Close(true)
		}
	})
}

// endGrace is how long a client whose token ended has to close its
// transport itself.
const endGrace = 2 * time.Second

// sendResult says what became of a frame.
type sendResult int

const (
	sent sendResult = iota
	dropped
	notSent // the connection is closed or being closed
)

// send hands one Socket.IO frame to the transport, which writes it on its
// own goroutine: send never waits for the client. A droppable frame (an
// event, a log line) is dropped while the client is more than SendBuffer
// bytes behind; any frame that would put it more than MaxSendBuffer behind
// disconnects it instead: it does not read.
func (c *conn) send(f []byte, droppable bool) sendResult {
	if c.closed.Load() {
		return notSent
	}
	c.sendMu.Lock()
	behind := c.sent - c.acked.Load() + int64(len(f))
	switch {
	case droppable && behind > int64(c.s.opts.SendBuffer):
		c.sendMu.Unlock()
		return dropped
	case behind > int64(c.s.opts.MaxSendBuffer):
		c.sendMu.Unlock()
		c.kick(behind)
		return notSent
	}
	c.sent += int64(len(f))
	mark := c.sent
	// The callback runs once the transport wrote the batch holding the
	// frame. After a transport upgrade a batch's callbacks may come one
	// batch late; keeping the highest mark seen heals that.
	c.sock.Conn().Write(types.NewStringBuffer(f), nil, func(transports.Transport) { c.ackTo(mark) })
	c.sendMu.Unlock()
	return sent
}

// caughtUp says whether the transport wrote all it was handed (or the
// connection is gone).
func (c *conn) caughtUp() bool {
	if c.closed.Load() {
		return true
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.acked.Load() >= c.sent
}

func (c *conn) ackTo(mark int64) {
	for {
		cur := c.acked.Load()
		if mark <= cur || c.acked.CompareAndSwap(cur, mark) {
			return
		}
	}
}

// kick closes the transport of a client that stopped reading, without
// waiting for what it has not read.
func (c *conn) kick(behind int64) {
	if !c.kicking.CompareAndSwap(false, true) {
		return
	}
	c.s.kicked.Add(1)
	c.s.log.Warn("Socket.IO client disconnected: it does not read what it is sent", "sid", c.sid,
		"username", c.username(), "bytes_behind", behind)
	c.closed.Store(true)
	if !c.s.spawn(func() { c.sock.Conn().Close(true) }) {
		c.sock.Conn().Close(true)
	}
}

// applyLogsLocked starts, changes or stops the connection's log stream to
// match what it asked for and what its user may read. c.mu is held.
func (c *conn) applyLogsLocked() {
	want := 0
	if c.s.opts.Logs != nil && !c.closed.Load() && c.user.Role == store.RoleAdmin {
		want = c.logLevel
	}
	if want == c.logRunning {
		return
	}
	c.stopLogsLocked()
	if want == 0 {
		return
	}
	sub := c.s.opts.Logs.Subscribe(want, c.s.opts.LogBuffer)
	stop := make(chan struct{})
	if !c.s.spawn(func() { c.pumpLogs(sub, stop) }) {
		sub.Close()
		return
	}
	c.logSub, c.logStop, c.logRunning = sub, stop, want
}

func (c *conn) stopLogsLocked() {
	if c.logSub == nil {
		return
	}
	c.logSub.Close()
	c.s.droppedLogs.Add(c.logSub.Dropped())
	close(c.logStop)
	c.logSub, c.logStop, c.logRunning = nil, nil, 0
}

// hubDropped is what the hub dropped for the running subscription.
func (c *conn) hubDropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logSub == nil {
		return 0
	}
	return c.logSub.Dropped()
}

// pumpLogs sends the log lines of one subscription until it is stopped.
func (c *conn) pumpLogs(sub *logstream.Subscription, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-c.s.ctx.Done():
			return
		case r := <-sub.C():
			body, err := json.Marshal(r)
			if err != nil {
				continue
			}
			if c.send(frame("log", body), true) == dropped {
				c.s.droppedLogs.Add(1)
				c.s.noteDrop()
			}
		}
	}
}

// handshakeToken is the connection's bearer token: auth.token, else the
// Authorization header, else ?token=.
func handshakeToken(h *socket.Handshake) string {
	if h == nil {
		return ""
	}
	if t, ok := h.Auth["token"].(string); ok && strings.TrimSpace(t) != "" {
		return bareToken(t)
	}
	if t := api.BearerFromHeader(h.Headers.Header().Get("Authorization")); t != "" {
		return t
	}
	return bareToken(h.Query.Query().Get("token"))
}

// bareToken accepts a token with or without its "Bearer " prefix.
func bareToken(t string) string {
	if b := api.BearerFromHeader(t); b != "" {
		return b
	}
	return strings.TrimSpace(t)
}

// handshakeLogLevel is the level of the log the connection asked for with
// auth.logLevel or ?logLevel=, def when it did not.
func handshakeLogLevel(h *socket.Handshake, def int) (int, *api.Error) {
	var v any
	if h != nil {
		if x, ok := h.Auth["logLevel"]; ok && x != nil {
			v = x
		} else if q := h.Query.Query().Get("logLevel"); q != "" {
			v = q
		}
	}
	if v == nil {
		return def, nil
	}
	level, ok := parseLevel(v)
	if !ok {
		return 0, api.Invalid(api.FieldError{Path: "logLevel", Message: levelRule})
	}
	return level, nil
}

const levelRule = "must be a log level: trace, debug, info, warn, error, fatal (or 20, 30, 40, 50, 60, 70), or off"

// parseLevel reads a level name, number or "off" (0).
func parseLevel(v any) (int, bool) {
	switch x := v.(type) {
	case string:
		x = strings.TrimSpace(x)
		if strings.EqualFold(x, "off") || strings.EqualFold(x, "none") {
			return 0, true
		}
		if l, ok := logstream.ParseLevel(x); ok {
			return l, true
		}
		if n, err := strconv.Atoi(x); err == nil {
			return parseLevel(float64(n))
		}
	case float64:
		if n := int(x); float64(n) == x && (n == 0 || logstream.LevelName(n) != "") {
			return n, true
		}
	}
	return 0, false
}
