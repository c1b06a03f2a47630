// Package socketio serves the L.C.R.U.D. API, the events and the daemon's
// live log over Socket.IO v4 (Engine.IO 4: long polling and WebSocket), as
// NestMTX's docs/apis/socket.io.md describes them. Like internal/mqtt it is
// a thin transport: it decodes envelopes and delivers answers;
// api.Dispatcher does the work, and every answer has the shapes of
// docs/mqtt-api.md §2.
//
// The contract as nestmtx implements it:
//
//   - Connection: the HTTP listener's /socket.io/. The bearer token from
//     auth create goes in the handshake's auth.token, an
//     "Authorization: Bearer <token>" header (extraHeaders) or the query
//     (?token=), looked at in that order. Without a valid token the
//     connection is refused: the client gets connect_error, whose message
//     says why and whose data is the API's error envelope ({"error": …}).
//     Only the default namespace "/" exists.
//   - Requests: emit "request" with {command, module, requestId, entity?,
//     payload?, token?} (an object, or the same as a JSON string). The
//     answer is emitted on the event named by requestId: the module's
//     result, or {"error": {code, status, message, details, context}}. A
//     token in the request overrides the connection's, for that request
//     only. With an acknowledgement callback the answer also comes through
//     it, and requestId may then be left out. A request that cannot be
//     answered (no valid requestId and no callback) gets its error on the
//     "failure" event.
//   - Token refresh: emit "authenticate" with the new token (a string, or
//     {token, requestId?}); the answer (the user and the token's expiry, or
//     an error, in which case the connection keeps its token) comes on the
//     requestId event and/or the callback. Reconnecting with a new
//     auth.token works too. Every connection's token is checked again every
//     RecheckInterval and whenever an account changes (EndLogins): a
//     connection whose token ended (expired, logged out, revoked, its
//     account disabled or deleted) gets an UNAUTHORIZED "failure" and is
//     disconnected by the server, so the client does not reconnect with the
//     dead token.
//   - Events: each bus event is emitted three times, as "<domain>:<event>"
//     (camera:ready, credentials:reauthenticated …), "<domain>:*" and
//     "nestmtx:*", each with {domain, entity, event, details, at}. Every
//     connection (they are all logged in) receives them, viewers included,
//     as MQTT lets every login read B/events and B/stream (§6).
//   - Log: admins receive "log" events, {hostname, level, msg, pid,
//     service, time, timestamp, attrs?} with NestMTX's numeric levels (20
//     trace … 70 fatal), from info up unless the handshake's auth.logLevel
//     (or ?logLevel=) says otherwise; "log:level" with a level name, number
//     or "off" changes it (answered like "authenticate"). Viewers get none.
//
// Bounds: at most MaxClients connections; requests run on at most
// MaxInFlight goroutines overall and MaxInFlightPerSocket per connection,
// past which they are answered TOO_MANY_REQUESTS at once. What is sent to a
// client is counted until its transport has written it: a client more than
// SendBuffer bytes behind loses events and log lines (counted in Stats),
// and one more than MaxSendBuffer behind is disconnected. Neither the bus
// nor the log hub ever waits for a client: both drop for subscribers that
// fall behind.
package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/logstream"
)

// Handler runs API requests (api.Dispatcher).
type Handler interface {
	Handle(ctx context.Context, req api.Request) (any, *api.Error)
}

// Options configure a Server; zero values take the defaults.
type Options struct {
	Handler Handler
	Tokens  api.TokenChecker // the dispatcher's token lookup (the store)
	Bus     *events.Bus      // nil: no events
	Logs    *logstream.Hub   // nil: no log stream
	Log     *slog.Logger

	// CORSOrigins are the browser origins allowed to connect (scheme://host[:port]);
	// a request with any other Origin header is refused. Clients that send
	// no Origin (scripts, servers) are not concerned.
	CORSOrigins []string

	MaxClients           int           // connections (default 192)
	MaxInFlight          int           // requests running at once, overall (default 256)
	MaxInFlightPerSocket int           // and per connection (default 64)
	MaxRequestBytes      int           // a larger request is PAYLOAD_TOO_LARGE (default 64 KiB)
	RequestTimeout       time.Duration // bounds one request's work (default 30 s)
	ConnectTimeout       time.Duration // from the transport's handshake to the Socket.IO connect (default 10 s)
	PingInterval         time.Duration // Engine.IO heartbeat (default 25 s)
	PingTimeout          time.Duration // a client silent this long after a ping is gone (default 20 s)
	RecheckInterval      time.Duration // how often every connection's token is looked up again (default 15 s)
	SendBuffer           int           // bytes a client may be behind before it loses events and log lines (default 1 MiB)
	MaxSendBuffer        int           // bytes behind at which it is disconnected (default 16 MiB)
	EventBuffer          int           // the bus subscription's buffer (default 1024)
	LogBuffer            int           // each log subscription's buffer (default 512)
	DefaultLogLevel      int           // the level an admin's log starts at (default info)
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxClients, 192)
	def(&o.MaxInFlight, 256)
	def(&o.MaxInFlightPerSocket, 64)
	def(&o.MaxRequestBytes, 64<<10)
	def(&o.SendBuffer, 1<<20)
	def(&o.MaxSendBuffer, 16<<20)
	def(&o.EventBuffer, 1024)
	def(&o.LogBuffer, 512)
	def(&o.DefaultLogLevel, logstream.LevelInfo)
	defDur(&o.RequestTimeout, 30*time.Second)
	defDur(&o.ConnectTimeout, 10*time.Second)
	defDur(&o.PingInterval, 25*time.Second)
	defDur(&o.PingTimeout, 20*time.Second)
	defDur(&o.RecheckInterval, 15*time.Second)
	if o.MaxSendBuffer < o.SendBuffer {
		o.MaxSendBuffer = o.SendBuffer
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Server is the Socket.IO endpoint; it is an http.Handler for /socket.io/.
type Server struct {
	opts    Options
	log     *slog.Logger
	io      *socket.Server
	eio     http.Handler
	origins map[string]bool

	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closed, conns and list, and orders wg.Add before Close's
	// wg.Wait.
	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
	list   []*conn // a copy of conns, replaced (never changed) on each change
	wg     sync.WaitGroup

	slots  chan struct{}        // requests running, overall
	busSub *events.Subscription // nil without a bus
	// drain tells fanOut to deliver what the bus holds and stop;
	// fanOutDone is closed when it did.
	drain, fanOutDone chan struct{}

	droppedEvents, droppedLogs, refused, kicked atomic.Uint64
	lastDropLog                                 atomic.Int64 // unix nanoseconds
}

// Stats are figures an operator (or a test) watches.
type Stats struct {
	Clients int `json:"clients"`
	// DroppedEvents and DroppedLogs count frames not sent because their
	// client was too far behind (bus and log hub drops included).
	DroppedEvents uint64 `json:"dropped_events"`
	DroppedLogs   uint64 `json:"dropped_logs"`
	// Refused counts requests answered TOO_MANY_REQUESTS.
	Refused uint64 `json:"refused_requests"`
	// Kicked counts clients disconnected for not reading.
	Kicked uint64 `json:"disconnected_slow_clients"`
}

// New builds the server; it serves once mounted (ServeHTTP) and until Close.
func New(o Options) (*Server, error) {
	if o.Handler == nil || o.Tokens == nil {
		return nil, errors.New("socketio: a handler and a token checker are required")
	}
	o.defaults()
	s := &Server{opts: o, log: o.Log, conns: map[*conn]struct{}{}, slots: make(chan struct{}, o.MaxInFlight),
		origins: map[string]bool{}, drain: make(chan struct{}), fanOutDone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, origin := range o.CORSOrigins {
		s.origins[strings.ToLower(strings.TrimSuffix(origin, "/"))] = true
	}

	opts := socket.DefaultServerOptions()
	opts.SetServeClient(false)
	opts.SetConnectTimeout(o.ConnectTimeout)
	opts.SetPingInterval(o.PingInterval)
	opts.SetPingTimeout(o.PingTimeout)
	opts.SetUpgradeTimeout(10 * time.Second)
	// Requests over MaxRequestBytes are answered PAYLOAD_TOO_LARGE; past
	// this the transport itself gives up on the client.
	opts.SetMaxHttpBufferSize(int64(max(1<<20, 2*o.MaxRequestBytes)))
	opts.SetAllowEIO3(false)
	opts.SetAllowRequest(s.allowHandshake)
	if len(o.CORSOrigins) > 0 {
		origins := make([]string, 0, len(s.origins))
		for origin := range s.origins {
			origins = append(origins, origin)
		}
		opts.SetCors(&types.Cors{Origin: origins})
	}
	s.io = socket.NewServer(nil, opts)
	s.io.Use(s.authenticate)
	_ = s.io.On("connection", s.onConnection)
	s.eio = s.io.ServeHandler(nil)

	if o.Bus != nil {
		s.busSub = o.Bus.Subscribe(o.EventBuffer)
		s.wg.Add(1)
		go s.fanOut(s.busSub)
	}
	s.wg.Add(1)
	go s.recheckLoop()
	return s, nil
}

// ServeHTTP serves /socket.io/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		refuseHTTP(w, http.StatusServiceUnavailable, "the daemon is shutting down")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !s.origins[strings.ToLower(origin)] {
		// Browsers send Origin; scripts and servers do not. No page of
		// another origin may talk to the daemon unless the operator listed
		// it (http_cors_origins).
		refuseHTTP(w, http.StatusForbidden, "origin "+origin+" is not allowed; list it in http_cors_origins")
		return
	}
	s.eio.ServeHTTP(w, r)
}

// refuseHTTP answers as Engine.IO does, {"code", "message"}.
func refuseHTTP(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": 4, "message": msg})
}

// allowHandshake caps the transport sessions. Handshakes racing past the
// check together may pass the cap by their number; the HTTP listener's own
// connection cap is the hard one.
func (s *Server) allowHandshake(*types.HttpContext) error {
	if n := s.io.Engine().ClientsCount(); n >= uint64(s.opts.MaxClients) {
		return errors.New("too many Socket.IO connections; try again later")
	}
	return nil
}

// Close disconnects every client and stops the server's goroutines. It
// waits a few seconds at most for requests still running.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	// The cameras' last events were emitted just before: deliver what the
	// bus holds, and give the transports a moment to write it.
	if s.busSub != nil {
		close(s.drain)
		select {
		case <-s.fanOutDone:
		case <-time.After(time.Second):
		}
	}
	s.flush(closeFlush)
	s.cancel()
	s.io.Close(nil)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("Socket.IO: requests still running at shutdown; not waiting for them")
	}
}

// closeFlush bounds how long Close waits for the clients to be sent what
// was queued for them.
const closeFlush = time.Second

// flush waits, d at most, until every client's transport has written what
// it was handed.
func (s *Server) flush(d time.Duration) {
	deadline := time.Now().Add(d)
	for _, c := range s.snapshot() {
		for !c.caughtUp() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Stats returns the server's figures.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.list)
	list := s.list
	s.mu.Unlock()
	st := Stats{Clients: n, DroppedEvents: s.droppedEvents.Load(), DroppedLogs: s.droppedLogs.Load(),
		Refused: s.refused.Load(), Kicked: s.kicked.Load()}
	for _, c := range list {
		st.DroppedLogs += c.hubDropped()
	}
	if s.busSub != nil {
		st.DroppedEvents += s.busSub.Dropped()
	}
	return st
}

// EndLogins looks up again the token of every connection of username but
// the one named except ("socketio:<sid>"), and disconnects those whose
// token ended: the API calls it when an account is disabled, deleted or
// gets a new password. It returns how many were disconnected.
func (s *Server) EndLogins(username, except string) int {
	n := 0
	for _, c := range s.snapshot() {
		if c.client == except || !strings.EqualFold(c.username(), username) {
			continue
		}
		if !c.recheck() {
			n++
		}
	}
	return n
}

// snapshot is the connected clients; the slice is never changed.
func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list
}

// register adds c; false once the server is closing.
func (s *Server) register(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.rebuildLocked()
	return true
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.rebuildLocked()
}

func (s *Server) rebuildLocked() {
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.list = list
}

// spawn runs f on a goroutine Close waits for; false once closing.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// recheckLoop looks every connection's token up again, so that one that
// expired or was revoked does not keep the socket.
func (s *Server) recheckLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.RecheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			for _, c := range s.snapshot() {
				c.recheck()
			}
		}
	}
}

// noteDrop says, at most once a minute, that clients lose frames.
func (s *Server) noteDrop() {
	now := time.Now().UnixNano()
	last := s.lastDropLog.Load()
	if now-last < int64(time.Minute) || !s.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("Socket.IO clients too slow to read lose events and log lines",
		"dropped_events_so_far", s.droppedEvents.Load(), "dropped_log_lines_so_far", s.droppedLogs.Load())
}
